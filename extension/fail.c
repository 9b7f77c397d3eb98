/*
 * fail.c: cloacina._fail_batch(s, task_ids, fences, errors, retryable), the failure of claimed
 * tasks, and cloacina._fail(s, task_id, fence, error, retryable), one task of it.
 *
 * Set-based like the completion (complete.c), in the same locking order: the runs of the tasks
 * in id order, then the tasks in id order. A failure is the exception, but failures come in
 * floods (a dependency is down and every handler throws), and a flood of retries must not cost
 * more than the work: one statement fails every task of a batch, as one completes them.
 *
 * A retryable failure with attempts left puts the task back to ready at its backoff time (a
 * hint for its workers when that is now, a due time for the background worker otherwise); the
 * failed attempt's output is discarded. Otherwise the task fails and its dependents are
 * evaluated (propagate.c), which may end its run.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_fail_batch);
PG_FUNCTION_INFO_V1(cloacina_fail_batch_current);
PG_FUNCTION_INFO_V1(cloacina_fail);
PG_FUNCTION_INFO_V1(cloacina_fail_current);

/*
 * $1 task ids, $2 fences, $3 errors, $4 retryable (NULL: true), $5 'running' (a parameter, see
 * complete.c). The UPDATE visits its input sorted by id, so it locks the tasks in id order.
 * One row per failed task: id, run, task, whether it is retried, when, its kind.
 */
static const char *const fail_sql =
"WITH input AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::boolean[])"
"                AS u(id, fence, error, retryable) ORDER BY u.id),"
" failed AS ("
"    UPDATE %1$s.tasks t"
"       SET status = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                         THEN 'ready' ELSE 'failed' END,"
"           ready_at = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                           THEN now() + cloacina._retry_delay(t.attempt, t.backoff, t.delay_ms,"
"                                                              t.max_delay_ms, t.jitter)"
"                           ELSE t.ready_at END,"
"           finished_at = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                              THEN NULL ELSE now() END,"
"           error = coalesce(nullif(i.error, ''), 'no error message given'),"
"           output = NULL, lease_until = NULL"
"      FROM input i"
"     WHERE t.id = i.id AND t.fence = i.fence AND t.status = $5"
"    RETURNING t.id, t.execution_id, t.task, t.attempt, t.status, t.ready_at, t.kind, t.error),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
"    SELECT execution_id, task, attempt, 'running', status,"
"           CASE WHEN status = 'ready'"
"                THEN format('attempt %%s failed, retry at %%s: %%s', attempt, ready_at, error)"
"                ELSE error END"
"      FROM failed ORDER BY id)"
" SELECT id, execution_id, task, status = 'ready', ready_at, kind = 'sql' FROM failed";

/*
 * Fails the tasks of the arrays task_ids (bigint[]), fences (bigint[]), errors (text[]) and
 * retryable (boolean[]) in "schema", the tenant path entered. Returns the accepted task ids,
 * sorted, and their number in *n_accepted.
 */
static int64 *
fail_tasks(const char *schema, Datum *arrays, int n, int *n_accepted)
{
	Oid			argtypes[5] = {INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID, TEXTOID};
	Datum		args[5] = {arrays[0], arrays[1], arrays[2], arrays[3], CStringGetTextDatum("running")};
	int64	   *accepted = palloc(sizeof(int64) * Max(n, 1));
	ArrayBuildState *run_ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ArrayBuildState *task_names = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	bool		retried_now = false;

	*n_accepted = 0;
	SPI_connect();
	(void) cloacina_lock_task_runs(schema, arrays[0], arrays[1]);
	cloacina_execute_tenant(fail_sql, schema, 5, argtypes, args, NULL);
	for (uint64 r = 0; r < SPI_processed && *n_accepted < n; r++)
	{
		HeapTuple	row = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		TimestampTz retry_at;
		bool		sql_task;

		accepted[(*n_accepted)++] = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		if (!DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)))
		{
			accumArrayResult(run_ids, SPI_getbinval(row, desc, 2, &isnull), false, INT8OID,
							 CurrentMemoryContext);
			accumArrayResult(task_names, SPI_getbinval(row, desc, 3, &isnull), false, TEXTOID,
							 CurrentMemoryContext);
			continue;
		}
		retry_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 5, &isnull));
		sql_task = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
		if (retry_at <= now && !sql_task)
			retried_now = true;
		else
			cloacina_due_push(schema, retry_at, sql_task && retry_at <= now);
	}
	if (retried_now)
		cloacina_hint_ready(schema);
	/* The tasks that failed for good: their dependents, all runs at once. */
	if (run_ids->nelems > 0)
		cloacina_propagate_runs(schema, makeArrayResult(run_ids, CurrentMemoryContext),
								makeArrayResult(task_names, CurrentMemoryContext));
	SPI_finish();

	/*
	 * "accepted" was allocated before SPI_connect, so it outlives the
	 * connection
	 */
	qsort(accepted, *n_accepted, sizeof(int64), cloacina_compare_int64);
	return accepted;
}

/* fail_batch for "schema": arguments from "first" on are task_ids, fences, errors, retryable. */
static void
fail_batch(FunctionCallInfo fcinfo, const char *schema, int first)
{
	Datum	   *ids,
			   *unused;
	bool	   *id_nulls,
			   *unused_nulls;
	int			n = cloacina_array_elements(fcinfo, first, INT8OID, &ids, &id_nulls);
	Datum		arrays[4];
	int64	   *accepted;
	int			n_accepted;

	if (n != cloacina_array_elements(fcinfo, first + 1, INT8OID, &unused, &unused_nulls) ||
		n != cloacina_array_elements(fcinfo, first + 2, TEXTOID, &unused, &unused_nulls) ||
		n != cloacina_array_elements(fcinfo, first + 3, BOOLOID, &unused, &unused_nulls))
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids, fences, errors and retryable must have the same length")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n <= 0)
		return;
	for (int i = 0; i < 4; i++)
		arrays[i] = PG_GETARG_DATUM(first + i);
	accepted = fail_tasks(schema, arrays, n, &n_accepted);
	cloacina_return_accepted(fcinfo, ids, id_nulls, n, accepted, n_accepted);
}

/* fail for "schema": arguments from "first" on are task_id, fence, error, retryable. */
static bool
fail_one(FunctionCallInfo fcinfo, const char *schema, int first)
{
	Oid			types[4] = {INT8OID, INT8OID, TEXTOID, BOOLOID};
	Datum		arrays[4];
	int			n_accepted;

	if (PG_ARGISNULL(first) || PG_ARGISNULL(first + 1))
		return false;
	for (int i = 0; i < 4; i++)
		arrays[i] = cloacina_argument_as_array(fcinfo, first + i, types[i]);
	(void) fail_tasks(schema, arrays, 1, &n_accepted);
	return n_accepted > 0;
}

/* cloacina._fail_batch(s, task_ids, fences, errors, retryable) */
Datum
cloacina_fail_batch(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);

	fail_batch(fcinfo, path.schema, 1);
	cloacina_leave_tenant_path(&path);
	return (Datum) 0;
}

/* cloacina.fail_batch(task_ids, fences, errors, retryable): in the caller's current schema */
Datum
cloacina_fail_batch_current(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, -1);

	fail_batch(fcinfo, path.schema, 0);
	cloacina_leave_tenant_path(&path);
	return (Datum) 0;
}

/* cloacina._fail(s, task_id, fence, error, retryable) */
Datum
cloacina_fail(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);
	bool		accepted = fail_one(fcinfo, path.schema, 1);

	cloacina_leave_tenant_path(&path);
	PG_RETURN_BOOL(accepted);
}

/* cloacina.fail(task_id, fence, error, retryable): in the caller's current schema */
Datum
cloacina_fail_current(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, -1);
	bool		accepted = fail_one(fcinfo, path.schema, 0);

	cloacina_leave_tenant_path(&path);
	PG_RETURN_BOOL(accepted);
}
