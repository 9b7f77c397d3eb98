/*
 * removed.c: C symbols that only the frozen 0.1.0 install script binds, for the functions 0.2.0
 * removed: the internal entry points that took a tenant schema as their first argument
 * (cloacina._claim(s, ...) and the like), which tests used and the API never did. The 0.1.0
 * script must still load against this library (an update starts from it), so the symbols
 * stay; until ALTER EXTENSION cloacina UPDATE drops the functions, calling one is an error
 * that says so. A removed symbol is never reused for another signature: the old script would
 * call it with its own arguments.
 */
#include "postgres.h"

#include "fmgr.h"

#include "cloacina.h"

static void
removed(const char *function)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s was removed in cloacina 0.2.0", function),
			 errhint("Run ALTER EXTENSION cloacina UPDATE, and use the public function of the same name "
					 "as the tenant's role (or after SET search_path = <tenant schema>).")));
}

#define REMOVED_IN_0_2_0(symbol, function) \
	PG_FUNCTION_INFO_V1(symbol); \
	Datum symbol(PG_FUNCTION_ARGS) \
	{ \
		removed(function); \
		PG_RETURN_NULL(); \
	}

REMOVED_IN_0_2_0(cloacina_claim, "cloacina._claim")
REMOVED_IN_0_2_0(cloacina_heartbeat, "cloacina._heartbeat")
REMOVED_IN_0_2_0(cloacina_heartbeat_batch, "cloacina._heartbeat_batch")
REMOVED_IN_0_2_0(cloacina_complete, "cloacina._complete")
REMOVED_IN_0_2_0(cloacina_complete_batch, "cloacina._complete_batch")
REMOVED_IN_0_2_0(cloacina_fail, "cloacina._fail")
REMOVED_IN_0_2_0(cloacina_fail_batch, "cloacina._fail_batch")
REMOVED_IN_0_2_0(cloacina_execute_batch, "cloacina._execute_batch")
REMOVED_IN_0_2_0(cloacina_execution_status, "cloacina._execution_status")
REMOVED_IN_0_2_0(cloacina_task_results, "cloacina._task_results")
REMOVED_IN_0_2_0(cloacina_wait, "cloacina._wait")
