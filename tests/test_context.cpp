// test_context.cpp — Context semantics (server-free): insert/get/update/remove, errors, conversions,
// and the write tracking that defines a task's output.
#define BOOST_TEST_MODULE context
#include <boost/test/unit_test.hpp>

#include <cloacina/context.hpp>
#include <cloacina/error.hpp>

#include <boost/json.hpp>

namespace json = boost::json;
using cloacina::Context;

BOOST_AUTO_TEST_CASE(insert_and_get) {
    Context context;
    context.insert("tenant_id", "acme_corp");
    context.insert("processed_records", 1250);
    context.insert("processing_completed", true);
    context.insert("tags", std::vector<std::string>{"a", "b"});
    context.insert("raw", json::value{{"nested", 1}});

    BOOST_TEST(context.size() == 5u);
    BOOST_REQUIRE(context.get("tenant_id") != nullptr);
    BOOST_TEST(context.get("tenant_id")->as_string() == "acme_corp");
    BOOST_TEST(context.get_as<std::int64_t>("processed_records").value() == 1250);
    BOOST_TEST(context.get_as<bool>("processing_completed").value());
    BOOST_TEST(context.at<std::vector<std::string>>("tags").size() == 2u);
    BOOST_TEST(context.get("raw")->as_object().at("nested").as_int64() == 1);
    BOOST_TEST(context.get("missing") == nullptr);
    BOOST_TEST(!context.get_as<std::string>("missing").has_value());
}

BOOST_AUTO_TEST_CASE(value_or_mirrors_unwrap_or) {
    Context context;
    context.insert("tenant_id", "initech");
    BOOST_TEST(context.value_or("tenant_id", "default") == "initech");
    BOOST_TEST(context.value_or("customer_name", "Unknown") == "Unknown");
    BOOST_TEST(context.value_or<std::int64_t>("processed_records", 0) == 0);
    // A value of another type falls back too (the seed's as_str() on a number is None).
    context.insert("count", 3);
    BOOST_TEST(context.value_or("count", "none") == "none");
}

BOOST_AUTO_TEST_CASE(insert_of_an_existing_key_is_an_error) {
    Context context;
    context.insert("k", 1);
    BOOST_CHECK_THROW(context.insert("k", 2), cloacina::ContextError);
    BOOST_TEST(context.at<int>("k") == 1);
}

BOOST_AUTO_TEST_CASE(update_of_a_missing_key_is_an_error) {
    Context context;
    BOOST_CHECK_THROW(context.update("k", 1), cloacina::ContextError);
    context.insert("k", 1);
    context.update("k", 2);
    BOOST_TEST(context.at<int>("k") == 2);
    context.upsert("k", 3);
    context.upsert("j", 4);
    BOOST_TEST(context.at<int>("k") == 3);
    BOOST_TEST(context.at<int>("j") == 4);
}

BOOST_AUTO_TEST_CASE(remove_returns_the_value) {
    Context context;
    context.insert("k", "v");
    auto removed = context.remove("k");
    BOOST_REQUIRE(removed.has_value());
    BOOST_TEST(removed->as_string() == "v");
    BOOST_TEST(!context.remove("k").has_value());
    BOOST_TEST(context.empty());
}

BOOST_AUTO_TEST_CASE(at_on_missing_or_mistyped_key_throws) {
    Context context;
    context.insert("k", "text");
    BOOST_CHECK_THROW((void)context.at<int>("k"), cloacina::ContextError);
    BOOST_CHECK_THROW((void)context.at<int>("missing"), cloacina::ContextError);
}

BOOST_AUTO_TEST_CASE(changes_are_the_written_keys_only) {
    Context context = Context::parse(R"({"input": 1, "other": 2})");
    BOOST_TEST(context.changes().empty());
    context.insert("added", true);
    context.update("input", 10);
    context.insert("temp", 0);
    context.remove("temp");
    const json::object changes = context.changes();
    BOOST_TEST(changes.size() == 2u);
    BOOST_TEST(changes.at("added").as_bool());
    BOOST_TEST(changes.at("input").as_int64() == 10);
    BOOST_TEST(!changes.contains("other"));
    BOOST_TEST(!changes.contains("temp"));
}

BOOST_AUTO_TEST_CASE(from_json_requires_an_object) {
    BOOST_CHECK_THROW(Context::parse("[1,2]"), cloacina::ContextError);
    BOOST_CHECK_THROW(Context::parse("{not json"), cloacina::ContextError);
    BOOST_TEST(Context::from_json(nullptr).empty());
    Context parsed = Context::parse(R"({"a": {"b": [1, 2]}})");
    BOOST_TEST(parsed.get("a")->as_object().at("b").as_array().size() == 2u);
    BOOST_TEST(Context::parse(parsed.to_string()) == parsed);
}

BOOST_AUTO_TEST_CASE(context_errors_derive_from_the_sdk_base) {
    Context context;
    context.insert("k", 1);
    try {
        context.insert("k", 1);
        BOOST_FAIL("insert of an existing key did not throw");
    } catch (const cloacina::Error& e) {
        BOOST_TEST(std::string(e.what()).find("\"k\"") != std::string::npos);
        BOOST_TEST(e.sqlstate().empty());
    }
}
