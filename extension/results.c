/*
 * results.c: execution_status and task_results, what a client reads after (or instead of)
 * waiting for a run, and the read of a run's status that wait() repeats (wait.c). C for the reason the task path is: the SDK reads both after every run, and
 * the plpgsql versions planned their statements on every call.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/tuplestore.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_execution_status_current);
PG_FUNCTION_INFO_V1(cloacina_task_results_current);

static const char *const status_sql =
"SELECT status, final_context, error FROM %1$s.executions WHERE id = $1";

static const char *const tasks_sql =
"SELECT task, status, attempt, output, error, started_at, finished_at"
"  FROM %1$s.tasks WHERE execution_id = $1 ORDER BY topo_index";

/*
 * Reads the status row of run "execution_id" of "schema" (the tenant path entered, inside SPI)
 * into SPI_tuptable: status, final_context, error. An unknown run is an error.
 */
void
cloacina_read_run_status(const char *schema, Datum execution_id, bool isnull)
{
	Oid			argtypes[1] = {INT8OID};

	cloacina_execute_tenant(status_sql, schema, 1, argtypes, &execution_id, isnull ? "n" : NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("execution %s does not exist",
						isnull ? "NULL" : psprintf(INT64_FORMAT, DatumGetInt64(execution_id)))));
}

/*
 * Returns the rows of "template" (the status row or the task rows) for the execution id in
 * argument 0; an unknown run is an error (checked on the run's row, so a run without tasks is
 * not mistaken for one).
 */
static Datum
read_run(FunctionCallInfo fcinfo, const char *schema, const char *template)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0)};
	const char *nulls = PG_ARGISNULL(0) ? "n" : NULL;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	SPI_connect();
	cloacina_read_run_status(schema, args[0], PG_ARGISNULL(0));
	if (template != status_sql)
		cloacina_execute_tenant(template, schema, 1, argtypes, args, nulls);
	for (uint64 r = 0; r < SPI_processed; r++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[r]);
	SPI_finish();
	return (Datum) 0;
}

/* cloacina.execution_status(execution_id) in "schema" */
static Datum
read_status(FunctionCallInfo fcinfo, const char *schema)
{
	return read_run(fcinfo, schema, status_sql);
}

/* cloacina.task_results(execution_id) in "schema" */
static Datum
read_tasks(FunctionCallInfo fcinfo, const char *schema)
{
	return read_run(fcinfo, schema, tasks_sql);
}

/* cloacina.execution_status(execution_id): in the caller's current schema */
Datum
cloacina_execution_status_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, read_status);
}

/* cloacina.task_results(execution_id): in the caller's current schema */
Datum
cloacina_task_results_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, read_tasks);
}
