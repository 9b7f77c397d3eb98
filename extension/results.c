/*
 * results.c: execution_status and task_results, what a client reads after (or instead of)
 * waiting for a run. C for the reason the task path is: the SDK reads both after every run, and
 * the plpgsql versions planned their statements on every call.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/tuplestore.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_execution_status);
PG_FUNCTION_INFO_V1(cloacina_execution_status_current);
PG_FUNCTION_INFO_V1(cloacina_task_results);
PG_FUNCTION_INFO_V1(cloacina_task_results_current);

static const char *const status_sql =
"SELECT status, final_context, error FROM %1$s.executions WHERE id = $1";

static const char *const tasks_sql =
"SELECT task, status, attempt, output, error, started_at, finished_at"
"  FROM %1$s.tasks WHERE execution_id = $1 ORDER BY topo_index";

/*
 * Runs "template" for the execution id in argument argno and returns its rows; an unknown run
 * is an error (checked on the run's row, so a run without tasks is not mistaken for one).
 */
static void
read_run(FunctionCallInfo fcinfo, const char *schema, int argno, const char *template)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {PG_ARGISNULL(argno) ? (Datum) 0 : PG_GETARG_DATUM(argno)};
	const char *nulls = PG_ARGISNULL(argno) ? "n" : NULL;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	SPI_connect();
	cloacina_execute_tenant(status_sql, schema, 1, argtypes, args, nulls);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("execution %s does not exist",
						PG_ARGISNULL(argno) ? "NULL" : psprintf(INT64_FORMAT, PG_GETARG_INT64(argno)))));
	if (template != status_sql)
		cloacina_execute_tenant(template, schema, 1, argtypes, args, nulls);
	for (uint64 r = 0; r < SPI_processed; r++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[r]);
	SPI_finish();
}

static Datum
read_in_tenant(FunctionCallInfo fcinfo, int schema_arg, const char *template)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, schema_arg);

	read_run(fcinfo, path.schema, schema_arg + 1, template);
	cloacina_leave_tenant_path(&path);
	return (Datum) 0;
}

/* cloacina._execution_status(s, execution_id) */
Datum
cloacina_execution_status(PG_FUNCTION_ARGS)
{
	return read_in_tenant(fcinfo, 0, status_sql);
}

/* cloacina.execution_status(execution_id): in the caller's current schema */
Datum
cloacina_execution_status_current(PG_FUNCTION_ARGS)
{
	return read_in_tenant(fcinfo, -1, status_sql);
}

/* cloacina._task_results(s, execution_id) */
Datum
cloacina_task_results(PG_FUNCTION_ARGS)
{
	return read_in_tenant(fcinfo, 0, tasks_sql);
}

/* cloacina.task_results(execution_id): in the caller's current schema */
Datum
cloacina_task_results_current(PG_FUNCTION_ARGS)
{
	return read_in_tenant(fcinfo, -1, tasks_sql);
}
