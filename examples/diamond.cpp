// examples/diamond.cpp — a diamond of dependencies with the builder API: two branches run in
// parallel after `fetch`, and `report` sees both outputs merged (in declaration order).
#include <cloacina/cloacina.hpp>

#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

using namespace cloacina;

// The admin URL of a database with the cloacina extension, from DATABASE_URL.
static std::string database_url() {
    const char* url = std::getenv("DATABASE_URL");
    if (url == nullptr || *url == '\0')
        throw std::runtime_error("set DATABASE_URL to an admin URL of a database with the cloacina extension");
    return url;
}

static const WorkflowRegistration order_review =
    Workflow::builder("order_review")
        .description("Check an order's stock and credit in parallel, then decide")
        .task(Task("fetch").handler([](Context& c) {
            c.insert("order", boost::json::object{{"id", 42}, {"amount", 120}});
        }))
        .task(Task("check_stock").depends_on("fetch").handler([](Context& c) { c.insert("in_stock", true); }))
        .task(Task("check_credit").depends_on("fetch").handler([](Context& c) {
            const auto order = c.at<boost::json::object>("order");
            c.insert("credit_ok", order.at("amount").to_number<int>() < 500);
        }))
        .task(Task("report").dependencies({"check_stock", "check_credit"}).handler([](Context& c) {
            c.insert("approved", c.at<bool>("in_stock") && c.at<bool>("credit_ok"));
        }));

int main() try {
    DefaultRunner runner = DefaultRunner::with_schema(database_url(), "examples",
                                                      DefaultRunnerConfig::builder().max_concurrent_tasks(2).build());
    const WorkflowResult result = runner.execute("order_review", Context());
    std::cout << "status: " << result.status << "\napproved: " << std::boolalpha
              << result.final_context.value_or<bool>("approved", false) << "\n";
    return result.status == WorkflowStatus::Completed ? 0 : 1;
} catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
}
