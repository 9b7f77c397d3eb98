/*
 * fail.c: the failure of claimed tasks, for cloacina.fail_batch(task_ids, fences, errors,
 * retryable), cloacina.fail(task_id, fence, error, retryable), the SQL-task pool (sqltask.c) and
 * the reaper (reap.c): every failed attempt goes through cloacina_fail_tasks.
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
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_fail_batch_current);
PG_FUNCTION_INFO_V1(cloacina_fail_current);

/*
 * $1 task ids, $2 fences, $3 errors, $4 retryable (NULL: true), $5 the leases the reaper saw
 * (NULL: any; a lease renewed since keeps its task), $6 retry at once instead of after the
 * backoff (the reaper's: the worker failed, not the task), $7 'running' (a parameter, see
 * complete.c), $8 a random number in [0, 1) per task for the retry's jitter and $9 now in UTC
 * (cloacina_utc_now): Citus refuses volatile functions and timestamptz arithmetic on columns in
 * an UPDATE (docs/citus.md, rule 2). The UPDATE visits its input sorted by id, so it locks the
 * tasks in id order.
 * One row per failed task: id, run, task, whether it is retried, when, its kind.
 */
static const char *const fail_sql =
"WITH input AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::boolean[],"
"                                    $5::timestamptz[], $8::float8[])"
"                AS u(id, fence, error, retryable, lease_until, chance) ORDER BY u.id),"
" failed AS ("
"    UPDATE %1$s.tasks t"
"       SET status = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                         THEN 'ready' ELSE 'failed' END,"
"           ready_at = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                           THEN CASE WHEN $6 THEN $9 AT TIME ZONE 'UTC'"
"                                     ELSE ($9 + cloacina._retry_delay(t.attempt, t.backoff, t.delay_ms,"
"                                                                      t.max_delay_ms, t.jitter, i.chance))"
"                                          AT TIME ZONE 'UTC' END"
"                           ELSE t.ready_at END,"
"           finished_at = CASE WHEN coalesce(i.retryable, true) AND t.attempt < t.max_attempts"
"                              THEN NULL ELSE $9 AT TIME ZONE 'UTC' END,"
"           error = coalesce(nullif(i.error, ''), 'no error message given'),"
"           output = NULL, lease_until = NULL"
"      FROM input i"
"     WHERE t.id = i.id AND t.fence = i.fence AND t.status = $7"
"       AND (i.lease_until IS NULL OR t.lease_until = i.lease_until)"
"    RETURNING t.id, t.execution_id, t.task, t.attempt, t.status, t.ready_at, t.kind, t.error, t.priority),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
"    SELECT execution_id, task, attempt, 'running', status,"
"           CASE WHEN status = 'ready' AND NOT $6"
"                THEN format('attempt %%s failed, retry at %%s: %%s', attempt, ready_at, error)"
"                ELSE error END"
"      FROM failed ORDER BY id)"
" SELECT id, execution_id, task, status = 'ready', ready_at, kind = 'sql', -priority FROM failed";

/* n random numbers in [0, 1), as a float8[] */
static Datum
random_numbers(int n)
{
	Datum	   *numbers = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		numbers[i] = Float8GetDatum(pg_prng_double(&pg_global_prng_state));
	return PointerGetDatum(construct_array(numbers, n, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/*
 * $1 task ids, $2 fences, $3 'running': locks the runs of the tasks that can still be failed,
 * in id order. The tasks are locked next, in id order too, by the failure's UPDATE,
 * which visits them in the order of its input (sorted by id; heartbeat batches go in id order
 * as well).
 */
static const char *const lock_sql =
"SELECT e.id FROM %1$s.executions e"
" WHERE e.id = ANY (ARRAY("
"    SELECT t.execution_id FROM unnest($1::bigint[], $2::bigint[]) AS u(id, fence)"
"      JOIN %1$s.tasks t ON t.id = u.id AND t.fence = u.fence AND t.status = $3))"
" ORDER BY e.id FOR UPDATE OF e";

/*
 * Inside an SPI connection: locks the runs of the tasks "task_ids" still running under
 * "fences" (bigint[] each), in id order. (The completion does the same inside its one
 * statement, complete.c.)
 */
static void
lock_task_runs(const char *schema, Datum task_ids, Datum fences)
{
	Oid			argtypes[3] = {INT8ARRAYOID, INT8ARRAYOID, TEXTOID};
	Datum		args[3] = {task_ids, fences, CStringGetTextDatum("running")};

	cloacina_execute_tenant(lock_sql, schema, 3, argtypes, args, NULL);
}

/*
 * Fails the tasks of "failures" in "schema", the tenant path entered. Returns the accepted
 * task ids, sorted, and their number in *n_accepted.
 */
int64 *
cloacina_fail_tasks(const char *schema, const TaskFailures *failures, int n, int *n_accepted)
{
	Oid			argtypes[9] = {INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID,
	TIMESTAMPTZARRAYOID, BOOLOID, TEXTOID, FLOAT8ARRAYOID, TIMESTAMPOID};
	Datum		args[9] = {failures->task_ids, failures->fences, failures->errors, failures->retryable,
		failures->seen_leases, BoolGetDatum(failures->retry_now), CStringGetTextDatum("running"),
	random_numbers(n), cloacina_utc_now()};
	char		nulls[9] = {' ', ' ', ' ', ' ', failures->seen_leases == (Datum) 0 ? 'n' : ' ', ' ', ' ', ' ', ' '};
	int64	   *accepted = palloc(sizeof(int64) * Max(n, 1));
	ArrayBuildState *run_ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ArrayBuildState *task_names = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	bool		retried_now = false;
	ClaimKey	least_retried = {PG_INT32_MAX, DT_NOEND, PG_INT64_MAX};

	*n_accepted = 0;
	SPI_connect();
	lock_task_runs(schema, failures->task_ids, failures->fences);
	cloacina_execute_tenant(fail_sql, schema, 9, argtypes, args, nulls);
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
		if (!sql_task)
		{
			ClaimKey	key = {DatumGetInt32(SPI_getbinval(row, desc, 7, &isnull)), retry_at,
			accepted[*n_accepted - 1]};

			if (cloacina_compare_claim_keys(&key, &least_retried) < 0)
				least_retried = key;
		}
		if (retry_at <= now && !sql_task)
			retried_now = true;
		else
			cloacina_due_push(schema, retry_at, sql_task && retry_at <= now);
	}
	if (least_retried.id != PG_INT64_MAX)
		cloacina_claim_floor_lower(schema, &least_retried);
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

/* cloacina.fail_batch(task_ids, fences, errors, retryable) in "schema" */
static Datum
fail_batch(FunctionCallInfo fcinfo, const char *schema)
{
	Datum	   *ids,
			   *unused;
	bool	   *id_nulls,
			   *unused_nulls;
	int			n = cloacina_array_elements(fcinfo, 0, INT8OID, &ids, &id_nulls);
	TaskFailures failures = {0};
	int64	   *accepted;
	int			n_accepted;

	if (n != cloacina_array_elements(fcinfo, 1, INT8OID, &unused, &unused_nulls) ||
		n != cloacina_array_elements(fcinfo, 2, TEXTOID, &unused, &unused_nulls) ||
		n != cloacina_array_elements(fcinfo, 3, BOOLOID, &unused, &unused_nulls))
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids, fences, errors and retryable must have the same length")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n <= 0)
		return (Datum) 0;
	failures.task_ids = PG_GETARG_DATUM(0);
	failures.fences = PG_GETARG_DATUM(1);
	failures.errors = PG_GETARG_DATUM(2);
	failures.retryable = PG_GETARG_DATUM(3);
	accepted = cloacina_fail_tasks(schema, &failures, n, &n_accepted);
	cloacina_return_accepted(fcinfo, ids, id_nulls, n, accepted, n_accepted);
	return (Datum) 0;
}

/* One attempt of a task failed, in "schema" (the tenant path entered); false if refused. */
bool
cloacina_fail_task(const char *schema, int64 task_id, int64 fence, const char *error, bool retryable)
{
	TaskFailures failures = {0};
	int			n_accepted;

	failures.task_ids = cloacina_one_element_array(Int64GetDatum(task_id), false, INT8OID);
	failures.fences = cloacina_one_element_array(Int64GetDatum(fence), false, INT8OID);
	failures.errors = cloacina_one_element_array(error ? CStringGetTextDatum(error) : (Datum) 0,
												 error == NULL, TEXTOID);
	failures.retryable = cloacina_one_element_array(BoolGetDatum(retryable), false, BOOLOID);
	(void) cloacina_fail_tasks(schema, &failures, 1, &n_accepted);
	return n_accepted > 0;
}

/* cloacina.fail_batch(task_ids, fences, errors, retryable): in the caller's current schema */
Datum
cloacina_fail_batch_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, fail_batch);
}

/* cloacina.fail(task_id, fence, error, retryable) in "schema" */
static Datum
fail_one(FunctionCallInfo fcinfo, const char *schema)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return BoolGetDatum(false);
	return BoolGetDatum(cloacina_fail_task(schema, PG_GETARG_INT64(0), PG_GETARG_INT64(1),
										   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)),
										   PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3)));
}

/* cloacina.fail(task_id, fence, error, retryable): in the caller's current schema */
Datum
cloacina_fail_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, fail_one);
}
