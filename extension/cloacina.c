/*
 * cloacina.c: module entry point. Declares the module and its settings and, when loaded through
 * shared_preload_libraries, asks for shared memory and registers the background workers. The
 * work itself lives in one file per concern: secret.c (passwords), wait.c (wait() wake-ups),
 * due.c (which tenants need the worker), scheduler.c (the scheduler), sqltask.c (SQL tasks),
 * unit.c (one unit of background work), prepared.c (the engine's prepared-plan cache).
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "cloacina.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *cloacina_database = NULL;
int			cloacina_naptime_ms = 10000;
int			cloacina_sql_workers = 2;
int			cloacina_retention_s = 7 * 24 * 3600;
int			cloacina_max_tenants = 16384;
bool		cloacina_preloaded = false;

static char *connection_host = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
cloacina_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	cloacina_wait_shmem_request();
	cloacina_due_shmem_request();
}

static void
cloacina_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	cloacina_wait_shmem_startup();
	cloacina_due_shmem_startup();
}

/* Settings that any backend may read or set. */
static void
define_session_settings(void)
{
	DefineCustomStringVariable("cloacina.connection_host",
							   "Host name put into the connection strings that create_tenant returns.",
							   "Empty means the address the calling session reached the server on.",
							   &connection_host, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.naptime",
							"Longest time the scheduler sleeps between looks at due work.",
							"It is woken earlier whenever something comes due.",
							&cloacina_naptime_ms, 10000, 100, 3600 * 1000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cloacina.retention",
							"How long finished runs are kept before they are pruned; 0 keeps them.",
							NULL, &cloacina_retention_s, 7 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
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
		/* CREATE EXTENSION refuses with a hint (sql/cloacina.sql); nothing more to set up */
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
