// examples/tutorial_06.cpp — the seed tutorial "06 - Multi-Tenancy" (main.rs + advanced.rs) ported
// line by line to the cloacina C++ SDK.
//
//   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/mydb ./tutorial_06
//
// DATABASE_URL must be an admin (superuser or cloacina_admin) URL of a database where
// `CREATE EXTENSION cloacina` was run. Re-runnable: the three schema tenants are reused when they
// exist, and the admin-API tenant `tenant_demo` is removed first when an earlier run left it.
// Exits non-zero when any run does not complete.
#include <cloacina/cloacina.hpp>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

using cloacina::Context;
using cloacina::Database;
using cloacina::DatabaseAdmin;
using cloacina::DefaultRunner;
using cloacina::TenantConfig;
using cloacina::WorkflowStatus;

// The seed's tracing macros (info!, warn!, error!): the SDK's, through its log hook.
using cloacina::error;
using cloacina::info;
using cloacina::warn;

// Set when a run does not complete, so that main() can exit non-zero.
static bool g_all_runs_completed = true;

// ===== src/main.rs ================================================================================

// #[workflow(name = "customer_processing", description = "...")]
CLOACINA_WORKFLOW(customer_processing, "Process customer data in isolated tenant environment");

// #[task(id = "process_customer_data", dependencies = [])]
CLOACINA_TASK(customer_processing, process_customer_data, .dependencies({})) {
    const std::string tenant_id = context.value_or("tenant_id", "default");
    const std::string customer_name = context.value_or("customer_name", "Unknown");

    info("Processing data for customer: ", customer_name, " (tenant: ", tenant_id, ")");

    // Simulate tenant-specific processing
    const int processed_records = tenant_id == "acme_corp"    ? 1250
                                  : tenant_id == "globex_inc" ? 890
                                  : tenant_id == "initech"    ? 430
                                                              : 100;

    info("Processed ", processed_records, " records for ", customer_name);

    context.insert("processed_records", processed_records);
    context.insert("processing_completed", true);
}

void basic_multi_tenant_demo(const std::string& database_url) {
    info("=== Basic Multi-Tenant Demo ===");

    // Create tenant-specific runners using schema isolation
    std::map<std::string, DefaultRunner> tenant_runners;
    const std::vector<std::string> tenants{"acme_corp", "globex_inc", "initech"};

    for (const auto& tenant_id : tenants) {
        info("Creating runner for tenant: ", tenant_id);

        // Create runner with tenant-specific schema (created when missing, reused otherwise)
        DefaultRunner runner = DefaultRunner::with_schema(database_url, tenant_id);
        tenant_runners.emplace(tenant_id, std::move(runner));
        info("Tenant ", tenant_id, " runner created with schema isolation");
    }

    // Execute workflows for each tenant
    // Workflows are auto-registered by the CLOACINA_WORKFLOW / CLOACINA_TASK macros
    for (auto& [tenant_id, runner] : tenant_runners) {
        info("Executing workflow for tenant: ", tenant_id);

        Context context;
        context.insert("tenant_id", tenant_id);
        context.insert("customer_name", tenant_id + " Customer");

        const auto result = runner.execute("customer_processing", context);

        if (result.status == WorkflowStatus::Completed) {
            const auto records = result.final_context.value_or<std::int64_t>("processed_records", 0);
            info("Tenant ", tenant_id, " completed: ", records, " records processed");
        } else {
            warn("Tenant ", tenant_id, " failed: ", result.status, " ", result.error.value_or(""));
            g_all_runs_completed = false;
        }
    }

    // Shutdown all runners
    for (auto& [tenant_id, runner] : tenant_runners) {
        info("Shutting down runner for tenant: ", tenant_id);
        runner.shutdown();
    }

    info("Basic multi-tenant demo completed");
}

// ===== src/advanced.rs ============================================================================

// #[workflow(name = "tenant_onboarding", description = "Complete tenant onboarding process")]
CLOACINA_WORKFLOW(tenant_onboarding, "Complete tenant onboarding process");

// #[task(id = "tenant_onboarding", dependencies = [])]
CLOACINA_TASK(tenant_onboarding, tenant_onboarding, .dependencies({})) {
    const std::string tenant_name = context.value_or("tenant_name", "Unknown");
    const std::string tenant_type = context.value_or("tenant_type", "starter");

    info("Onboarding new tenant: ", tenant_name, " (type: ", tenant_type, ")");

    // Simulate tenant-specific setup
    std::vector<std::string> setup_tasks;
    if (tenant_type == "enterprise") {
        setup_tasks = {"provision_resources", "setup_integrations", "configure_billing", "setup_support"};
    } else if (tenant_type == "professional") {
        setup_tasks = {"provision_resources", "setup_integrations", "configure_billing"};
    } else if (tenant_type == "starter") {
        setup_tasks = {"provision_resources", "configure_billing"};
    } else {
        setup_tasks = {"provision_resources"};
    }

    info("Executing ", setup_tasks.size(), " setup tasks for ", tenant_name);
    for (const auto& task : setup_tasks) info("  Completed: ", task);

    context.insert("onboarding_completed", true);
    context.insert("setup_tasks_count", setup_tasks.size());
    context.insert("tenant_status", "active");
}

// #[workflow(name = "tenant_data_processing", description = "Process tenant-specific data with isolation")]
CLOACINA_WORKFLOW(tenant_data_processing, "Process tenant-specific data with isolation");

// #[task(id = "process_tenant_data", dependencies = [])]
CLOACINA_TASK(tenant_data_processing, process_tenant_data, .dependencies({})) {
    const std::string tenant_id = context.value_or("tenant_id", "default");
    const std::string data_volume = context.value_or("data_volume", "small");

    info("Processing ", data_volume, " data for tenant: ", tenant_id);

    // Simulate data processing based on volume
    const auto [processing_time, records_processed] = data_volume == "large"    ? std::pair{5000, 50000}
                                                      : data_volume == "medium" ? std::pair{2000, 15000}
                                                      : data_volume == "small"  ? std::pair{500, 2000}
                                                                                : std::pair{100, 100};

    // Simulate processing delay (a cancellable sleep: it ends early if the run is cancelled)
    cancellation.wait_for(std::chrono::milliseconds(processing_time / 10));
    cancellation.throw_if_cancelled();

    info("Processed ", records_processed, " records in ", processing_time, "ms for ", tenant_id);

    context.insert("records_processed", records_processed);
    context.insert("processing_time_ms", processing_time);
    context.insert("processing_status", "completed");
}

void advanced_admin_demo(const std::string& admin_database_url) {
    info("=== Advanced Multi-Tenant Demo with Admin API ===");

    // Create database admin
    Database admin_db(admin_database_url, "cloacina", 10);
    DatabaseAdmin admin(admin_db);

    // Re-runnable: a tenant_demo left by an earlier run is removed first.
    if (admin.tenant_exists("tenant_demo")) {
        info("Tenant tenant_demo exists from an earlier run: removing it first");
        admin.remove_tenant("tenant_demo", "demo_user");
    }

    // Provision new tenant using admin API
    const TenantConfig tenant_config{
        .schema_name = "tenant_demo",
        .username = "demo_user",
        .password = "",  // Auto-generate secure password
    };

    info("Provisioning tenant with admin API...");
    cloacina::TenantCredentials credentials;
    try {
        credentials = admin.create_tenant(tenant_config);
    } catch (const cloacina::Error& e) {
        throw std::runtime_error(std::string("Failed to provision tenant: ") + e.what());
    }
    info("Tenant provisioned successfully!");
    info("  Schema: ", credentials.schema_name);
    info("  Username: ", credentials.username);
    info("  Password: generated, ", credentials.password.size(), " characters (shown once, not printed)");
    info("  Connection ready");

    // Create runner with tenant-specific credentials
    info("Creating runner with dedicated credentials...");
    DefaultRunner tenant_runner = DefaultRunner::new_runner(credentials.connection_string);

    // Workflow is auto-registered by the CLOACINA_WORKFLOW macro

    // Execute onboarding workflow
    Context context;
    context.insert("tenant_id", "demo");
    context.insert("tenant_name", "Demo Tenant");
    context.insert("tenant_type", "professional");

    const auto result = tenant_runner.execute("tenant_onboarding", context);

    if (result.status == WorkflowStatus::Completed) {
        const auto task_count = result.final_context.value_or<std::uint64_t>("setup_tasks_count", 0);
        info("Tenant onboarded successfully with ", task_count, " setup tasks");
    } else {
        error("Tenant onboarding failed: ", result.status, " ", result.error.value_or(""));
        g_all_runs_completed = false;
    }

    // Then the tenant's own data processing, on the same dedicated credentials
    Context data_context;
    data_context.insert("tenant_id", "demo");
    data_context.insert("data_volume", "medium");

    const auto processing = tenant_runner.execute("tenant_data_processing", data_context);

    if (processing.status == WorkflowStatus::Completed) {
        info("Tenant data processed: ", processing.final_context.value_or<std::int64_t>("records_processed", 0),
             " records in ", processing.final_context.value_or<std::int64_t>("processing_time_ms", 0),
             "ms (status: ", processing.final_context.value_or("processing_status", "?"), ")");
    } else {
        error("Tenant data processing failed: ", processing.status, " ", processing.error.value_or(""));
        g_all_runs_completed = false;
    }

    tenant_runner.shutdown();
    info("Advanced admin demo completed");
}

// ===== main =======================================================================================

int main() {
    // Initialize logging: the default handler prints records at INFO and above (the SDK's own,
    // with their tenant, run and task) to stderr
    cloacina::set_log_level(cloacina::LogLevel::Info);

    info("Starting Tutorial 06: Multi-Tenancy");

    // Get database URL from environment or use default
    std::string database_url;
    if (const char* url = std::getenv("DATABASE_URL"); url != nullptr && *url != '\0') {
        database_url = url;
    } else {
        warn("DATABASE_URL not set, using default PostgreSQL connection");
        database_url = "postgresql://cloacina:cloacina@localhost:5432/cloacina";
    }

    try {
        basic_multi_tenant_demo(database_url);

        // Advanced demo with admin API. Unlike the seed, a failure here is not skipped: it fails
        // the program, since the demo is also the product's acceptance check.
        info("\n", std::string(60, '='));
        advanced_admin_demo(database_url);
    } catch (const cloacina::Error& e) {
        error(e.what(), e.sqlstate().empty() ? "" : " (SQLSTATE " + e.sqlstate() + ")");
        return 1;
    } catch (const std::exception& e) {
        error(e.what());
        return 1;
    }

    if (!g_all_runs_completed) {
        error("\nTutorial 06 finished, but not every run completed");
        return 1;
    }
    info("\nTutorial 06 completed successfully!");
    return 0;
}
