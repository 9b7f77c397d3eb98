/*
 * cloacina.c: module entry point. Declares the module and its settings and, when loaded through
 * shared_preload_libraries, asks for shared memory and registers the background workers. The
 * work itself lives in one file per concern; the README's layout table lists them all. Those
 * with shared memory: wait.c (wait() wake-ups), due.c (which tenants need the background
 * worker), sqlslot.c (the SQL task each pool worker runs).
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "cloacina.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *cloacina_database = NULL;
int			cloacina_naptime_ms = 10000;
int			cloacina_sql_workers = 2;
int			cloacina_retention_s = 7 * 24 * 3600;
int			cloacina_max_tenants = 16384;
bool		cloacina_preloaded = false;
int			cloacina_max_context_bytes = 16 * 1024 * 1024;
int			cloacina_max_context_depth = 100;
int			cloacina_sql_task_timeout_ms = 5 * 60 * 1000;
int			cloacina_sql_tenant_max_running = -1;
int			cloacina_worker_lock_timeout_ms = 200;
int			cloacina_worker_statement_timeout_ms = 30 * 1000;
int			cloacina_max_claim_wait_ms = 5 * 1000;
int			cloacina_cached_tenants = 1000;

/* read by create_tenant with current_setting() */
static int	cloacina_tenant_connection_limit = 64;

static char *connection_host = NULL;
static int	connection_port = 0;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
cloacina_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	cloacina_wait_shmem_request();
	cloacina_due_shmem_request();
	cloacina_sqlslot_shmem_request();
	cloacina_claim_floor_shmem_request();
}

static void
cloacina_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	cloacina_wait_shmem_startup();
	cloacina_due_shmem_startup();
	cloacina_sqlslot_shmem_startup();
	cloacina_claim_floor_shmem_startup();
}

/*
 * Limits on what a tenant can consume. Superuser-only (or set in postgresql.conf), so that a
 * tenant role cannot raise them for its own sessions; see docs/operations.md for the defaults.
 */
static void
define_limits(void)
{
	DefineCustomIntVariable("cloacina.max_context_bytes",
							"Largest context or task output a tenant may hand in.",
							"Checked at execute, complete, a SQL task's output and a schedule's context.",
							&cloacina_max_context_bytes, 16 * 1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.max_context_depth",
							"Deepest nesting of objects and arrays in a context or task output.",
							NULL, &cloacina_max_context_depth, 100, 1, 10000, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.sql_task_timeout",
							"Longest time one attempt of a SQL task may run.",
							"A task's own timeout_ms and its run's timeout can only shorten it.",
							&cloacina_sql_task_timeout_ms, 5 * 60 * 1000, 100, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.sql_tenant_max_running",
							"Most SQL tasks of one tenant that run at the same time.",
							"-1 means one less than cloacina.sql_workers (at least 1), so that no tenant holds the whole pool; "
							"set_tenant_limits(max_running) overrides it per tenant.",
							&cloacina_sql_tenant_max_running, -1, -1, CLOACINA_MAX_SQL_WORKERS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.worker_lock_timeout",
							"Longest time the background workers wait for a lock in a tenant's tables.",
							"A tenant whose lock cannot be had is looked at again later, with backoff.",
							&cloacina_worker_lock_timeout_ms, 200, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.tenant_connection_limit",
							"CONNECTION LIMIT of the login role create_tenant makes; -1 is no limit.",
							"So that no tenant can take every connection of the server; ALTER ROLE changes "
							"one tenant's.",
							&cloacina_tenant_connection_limit, 64, -1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.tenant_transaction_timeout",
							"Longest time a session of a tenant's role may keep a transaction open; 0 is no limit.",
							"The scheduler ends such a session: an open transaction holds back vacuum in "
							"every tenant's tables.",
							&cloacina_tenant_transaction_timeout_ms, 15 * 60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.worker_statement_timeout",
							"Longest time one unit of the background workers' own work for a tenant may take.",
							NULL, &cloacina_worker_statement_timeout_ms, 30 * 1000, 100, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.max_claim_wait",
							"Longest time one claim waits for work; a longer wait asked for is cut to it.",
							"A waiting claim holds its snapshot, and so holds back vacuum, while it waits; "
							"0 makes every claim return at once.",
							&cloacina_max_claim_wait_ms, 5 * 1000, 0, 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.cached_tenants",
							"Most tenants whose tables one backend keeps in its caches; one more empties them.",
							"A backend keeps about 115 kB of cache per tenant whose tables it has read "
							"and never lets it go on its own; 0 means no bound.",
							&cloacina_cached_tenants, 1000, 0, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Settings that any backend may read or set. */
static void
define_session_settings(void)
{
	DefineCustomStringVariable("cloacina.connection_host",
							   "Host name put into the connection strings that create_tenant returns.",
							   "Empty means the address the calling session reached the server on.",
							   &connection_host, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.connection_port",
							"Port put into the connection strings that create_tenant returns.",
							"0 means the port the calling session reached the server on; set it to a "
							"connection pooler's port when tenants connect through one.",
							&connection_port, 0, 0, 65535, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.naptime",
							"Longest time the scheduler sleeps between looks at due work.",
							"It is woken earlier whenever something comes due.",
							&cloacina_naptime_ms, 10000, 100, 3600 * 1000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.retention",
							"How long finished runs are kept before they are pruned; 0 keeps them.",
							NULL, &cloacina_retention_s, 7 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	cloacina_define_event_log_level();
	cloacina_define_history_level();
	cloacina_define_claim_floors();
	define_limits();
}

/* Settings fixed at server start; they can only be defined while preloading. */
static void
define_server_settings(void)
{
	DefineCustomStringVariable("cloacina.database",
							   "Database the cloacina background workers serve.",
							   NULL, &cloacina_database, "postgres", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.sql_workers",
							"Number of background workers that run SQL tasks.",
							NULL, &cloacina_sql_workers, 2, 0, CLOACINA_MAX_SQL_WORKERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.max_tenants",
							"Number of tenants the scheduler's shared due table holds.",
							NULL, &cloacina_max_tenants, 16384, 64, 1000000, PGC_POSTMASTER,
							0, NULL, NULL, NULL);
}

void
_PG_init(void)
{
	define_session_settings();
	if (!process_shared_preload_libraries_in_progress)
	{
		/*
		 * CREATE EXTENSION refuses with a hint (sql/src/registry.sql);
		 * nothing more to set up
		 */
		MarkGUCPrefixReserved("cloacina");
		return;
	}
	define_server_settings();
	MarkGUCPrefixReserved("cloacina");

	cloacina_preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cloacina_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cloacina_shmem_startup;
	cloacina_register_workers();
}
