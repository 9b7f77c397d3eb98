/*
 * cloacina.c: module entry point. Declares the module, defines its settings and, when loaded
 * through shared_preload_libraries, asks for the shared memory the other files need. The
 * work itself lives in one file per concern (secret.c, wait.c).
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "cloacina.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *connection_host = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
cloacina_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	cloacina_wait_shmem_request();
}

static void
cloacina_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	cloacina_wait_shmem_startup();
}

void
_PG_init(void)
{
	DefineCustomStringVariable("cloacina.connection_host",
							   "Host name put into the connection strings that create_tenant returns.",
							   "Empty means the address the calling session reached the server on.",
							   &connection_host,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("cloacina");

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cloacina_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cloacina_shmem_startup;
}
