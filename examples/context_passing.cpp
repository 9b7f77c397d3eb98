// examples/context_passing.cpp — tutorial 2's idea: each task reads what its dependencies wrote.
// A three-step chain: extract -> transform -> load, in tenant schema "examples".
#include <cloacina/cloacina.hpp>

#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

#include <boost/json/serialize.hpp>

using namespace cloacina;

// The admin URL of a database with the cloacina extension, from DATABASE_URL.
static std::string database_url() {
    const char* url = std::getenv("DATABASE_URL");
    if (url == nullptr || *url == '\0')
        throw std::runtime_error("set DATABASE_URL to an admin URL of a database with the cloacina extension");
    return url;
}

CLOACINA_WORKFLOW(etl_pipeline, "Extract, transform and load a list of numbers");

CLOACINA_TASK(etl_pipeline, extract) { context.insert("numbers", std::vector<int>{1, 2, 3, 4, 5}); }

CLOACINA_TASK(etl_pipeline, transform, .dependencies({"extract"})) {
    std::vector<int> squares;
    for (int n : context.at<std::vector<int>>("numbers")) squares.push_back(n * n);
    context.insert("squares", squares);
}

CLOACINA_TASK(etl_pipeline, load, .dependencies({"transform"})) {
    int total = 0;
    for (int s : context.at<std::vector<int>>("squares")) total += s;
    context.insert("total", total);
}

int main() try {
    DefaultRunner runner = DefaultRunner::with_schema(database_url(), "examples");
    const WorkflowResult result = runner.execute("etl_pipeline", Context());
    std::cout << "status: " << result.status << "\nfinal context: " << result.final_context << "\n";
    for (const auto& task : result.task_results)
        std::cout << "  " << task.task << ": " << task.status << ", output " << boost::json::serialize(task.output)
                  << "\n";
    runner.shutdown();
    return result.status == WorkflowStatus::Completed && result.final_context.at<int>("total") == 55 ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
