// tests/consumer/main.cpp — uses the installed SDK: one workflow, one run, in a fresh tenant schema.
#include <cloacina/cloacina.hpp>

#include <unistd.h>
#include <cstdlib>
#include <iostream>
#include <string>

int main() {
    const char* url = std::getenv("DATABASE_URL");
    if (url == nullptr || *url == '\0') {
        std::cerr << "DATABASE_URL is not set\n";
        return 1;
    }
    const std::string schema = "consumer_" + std::to_string(getpid());
    int status = 1;
    try {
        auto registry = std::make_shared<cloacina::Registry>();
        registry->add(
            cloacina::Workflow::builder("hello")
                .task(cloacina::Task("greet").handler([](cloacina::Context& c) { c.insert("greeting", "hello"); }))
                .build());
        {
            cloacina::DefaultRunner runner = cloacina::DefaultRunner::with_schema(
                url, schema, cloacina::DefaultRunnerConfig::builder().registry(registry).build());
            const cloacina::WorkflowResult result = runner.execute("hello", cloacina::Context());
            std::cout << "cloacina " << CLOACINA_SDK_VERSION << ": " << result.status << " " << result.final_context
                      << "\n";
            if (result.status == cloacina::WorkflowStatus::Completed) status = 0;
        }
        cloacina::DatabaseAdmin(cloacina::Database(url, "", 1)).remove_tenant(schema);
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return status;
}
