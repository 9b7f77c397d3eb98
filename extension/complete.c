/*
 * complete.c: the completion of claimed tasks, for cloacina.complete_batch(task_ids, fences,
 * contexts), cloacina.complete(task_id, fence, context) and the SQL-task pool, and
 * cloacina._finalize(s, run_ids, forced_status, forced_error), the end of runs.
 *
 * Both are on every task's path (design §8), so they are written in C: each statement is
 * prepared once per backend and tenant with a generic plan. A completion is one statement, the
 * end of its run included, and one more that writes its events (history.c). Tasks with
 * dependents hand over to propagate.c, which evaluates the dependents' trigger rules.
 *
 * Locking order (shared with fail, cancel, the reaper and the SQL-task pool): the runs' rows in
 * id order first, then the tasks' rows in id order.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_complete_batch_current);
PG_FUNCTION_INFO_V1(cloacina_complete_current);
PG_FUNCTION_INFO_V1(cloacina_finalize);

/*
 * The statements reach tasks by id. The status they must have is the parameter $4 ('running')
 * rather than a literal, so that a generic plan cannot prefer the partial index of running
 * tasks (tasks_lease_expiry) when the statistics say there are few: under load there are many,
 * and many more dead entries.
 */

/*
 * The end of runs, shared by the finalize and the completion statements. Before these CTEs,
 * "ending" names the runs to end (id, status, input_context), their rows locked, and
 * "run_tasks" all their tasks as they will be (execution_id, task, status, output, error,
 * topo_index); FORCED_STATUS and FORCED_ERROR are text expressions, NULL when not forced, and
 * NOW the parameter that holds now() (docs/citus.md, rule 2). They set each run's status
 * (derived from its tasks unless forced), final_context (the input merged with every completed
 * task's output in topological order) and error. "outcome" is materialized and carries the old
 * status, and the runs' rows are found by key (the array), whatever number of runs a plan
 * expects: a plan that expected one rescanned the aggregate once per run. "ended" names the
 * runs ended (id, old_status, new_status); the caller logs their events and wakes their
 * waiters.
 */
#define END_RUNS_CTES(FORCED_STATUS, FORCED_ERROR, NOW) \
" outcome AS MATERIALIZED (" \
"    SELECT x.execution_id, max(x.run_status) AS old_status," \
"           bool_or(x.status = 'failed') AS any_failed," \
"           (array_agg(format('task \"%%s\" failed: %%s', x.task, x.error) ORDER BY x.ord)" \
"                FILTER (WHERE x.status = 'failed'))[1] AS first_error," \
"           cloacina.context_merge_agg(x.output ORDER BY x.ord)" \
"                FILTER (WHERE x.ord < 0 OR x.status = 'completed') AS final_context" \
"    FROM (SELECT id AS execution_id, status AS run_status, NULL::text AS task, NULL::text AS status," \
"                 input_context AS output, NULL::text AS error, -1 AS ord FROM ending" \
"          UNION ALL" \
"          SELECT execution_id, NULL, task, status, output, error, topo_index FROM run_tasks) x" \
"    GROUP BY x.execution_id)," \
" ended AS (" \
"    UPDATE %1$s.executions e" \
"       SET status = coalesce(" FORCED_STATUS ", CASE WHEN o.any_failed THEN 'failed' ELSE 'completed' END)," \
"           final_context = o.final_context," \
"           error = coalesce(" FORCED_ERROR ", CASE WHEN " FORCED_STATUS " = 'cancelled' THEN 'cancelled'" \
"                                                  ELSE o.first_error END)," \
"           pending_tasks = 0, finished_at = " NOW \
"      FROM outcome o" \
"     WHERE e.id = o.execution_id AND e.id = ANY (ARRAY(SELECT execution_id FROM outcome))" \
"    RETURNING e.id, o.old_status, e.status AS new_status)"

/*
 * The completion. $1 task ids, $2 fences, $3 outputs, $4 'running', $5 now(): completes the
 * tasks whose fence is current, then counts down the runs without dependents among their
 * completed tasks, or ends them when these were their last tasks (propagate.c does the
 * others). One row per run: its completed tasks (and their attempts, for their events),
 * whether they have dependents, whether it ended.
 *
 * One statement, so that on Citus a completion is one routed query (docs/citus.md). It keeps
 * the locking order by locking the runs first ("locked": an init plan of the tasks' UPDATE,
 * so it has run before the UPDATE locks its first task). Its snapshot is older than those
 * locks, so everything it decides from must be read under a lock, which returns a row's
 * latest version: the runs' rows come from "locked", the tasks it completes from the UPDATE,
 * and a run's other tasks, when it ends, are read FOR SHARE ("others"). A one-task run ends
 * from "done" alone, without an index probe into tasks. A completed task's error is cleared:
 * an earlier attempt's error stays in the events.
 *
 * The last join is a FULL JOIN where a LEFT JOIN says the same (every ended run is in "runs"):
 * a generic plan expects one row from a CTE and would join by nested loop, which rescans
 * "ended" once per run, quadratic in the batch (a tenth of the statement's time at 100 tasks,
 * 9 of 11 ms in propagate.c's statement at 300 dependents); a FULL JOIN cannot be a nested
 * loop. propagate.c does the same.
 */
static const char *const complete_sql =
"WITH input AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::jsonb[]) AS u(id, fence, output) ORDER BY u.id),"
" locked AS MATERIALIZED ("
"    SELECT e.id, e.status, e.input_context, e.pending_tasks, e.task_count FROM %1$s.executions e"
"     WHERE e.id = ANY (ARRAY("
"        SELECT t.execution_id FROM input i JOIN %1$s.tasks t ON t.id = i.id AND t.fence = i.fence AND t.status = $4))"
"     ORDER BY e.id FOR UPDATE OF e),"
" done AS ("
"    UPDATE %1$s.tasks t"
"       SET status = 'completed', output = coalesce(i.output, '{}'::jsonb), finished_at = $5,"
"           lease_until = NULL, error = NULL"
"      FROM input i"
"     WHERE t.id = i.id AND t.fence = i.fence AND t.status = $4"
"       AND t.execution_id = ANY (ARRAY(SELECT id FROM locked))"
"    RETURNING t.id, t.execution_id, t.task, t.attempt, cardinality(t.dependents) > 0 AS has_dependents,"
"              t.output, t.topo_index),"
" runs AS ("
"    SELECT execution_id, array_agg(task ORDER BY id) AS tasks, array_agg(id) AS ids,"
"           array_agg(attempt ORDER BY id) AS attempts,"
"           bool_or(has_dependents) AS has_dependents, count(*)::int AS n"
"      FROM done GROUP BY execution_id),"
" run_rows AS MATERIALIZED ("
"    SELECT l.id, l.status, l.input_context, l.pending_tasks, l.task_count, r.n"
"      FROM runs r JOIN locked l ON l.id = r.execution_id"
"     WHERE NOT r.has_dependents),"
" ending AS (SELECT id, status, input_context FROM run_rows WHERE pending_tasks <= n),"
" counted AS ("
"    UPDATE %1$s.executions e SET pending_tasks = e.pending_tasks - rr.n"
"      FROM run_rows rr"
"     WHERE e.id = rr.id AND rr.pending_tasks > rr.n),"
" others AS ("
"    SELECT t.execution_id, t.task, t.status, t.output, t.error, t.topo_index FROM %1$s.tasks t"
"     WHERE t.execution_id = ANY (ARRAY(SELECT id FROM run_rows WHERE pending_tasks <= n AND task_count > n))"
"       AND t.id <> ALL (ARRAY(SELECT id FROM done))"
"       FOR SHARE OF t),"
" run_tasks AS ("
"    SELECT * FROM others"
"    UNION ALL"
"    SELECT execution_id, task, 'completed', output, NULL, topo_index FROM done"
"     WHERE execution_id = ANY (ARRAY(SELECT id FROM ending))),"
END_RUNS_CTES("NULL::text", "NULL::text", "$5")
" SELECT r.execution_id, r.tasks, r.ids, r.has_dependents, r.attempts, en.old_status, en.new_status"
"   FROM runs r FULL JOIN ended en ON en.id = r.execution_id"
"  ORDER BY r.execution_id";

/* $1 run ids, $2 forced status, $3 forced error, $4 now(): ends the runs. */
static const char *const finalize_sql =
"WITH ending AS (SELECT id, status, input_context FROM %1$s.executions WHERE id = ANY ($1)),"
" run_tasks AS ("
"    SELECT execution_id, task, status, output, error, topo_index"
"      FROM %1$s.tasks WHERE execution_id = ANY ($1)),"
END_RUNS_CTES("$2", "$3", "$4")
" SELECT id, old_status, new_status FROM ended ORDER BY id";

/*
 * The end of the run in row "r" of "rows" (its id in column "id_column", its old and new status
 * in columns "old_status_column" and the next): its event (unless it completed and the history
 * keeps exceptions only), and its waiters woken at commit.
 */
static void
log_run_end(History *history, SPITupleTable *rows, uint64 r, int id_column, int old_status_column)
{
	bool		isnull;
	Datum		run_id = SPI_getbinval(rows->vals[r], rows->tupdesc, id_column, &isnull);
	Datum		old_status = SPI_getbinval(rows->vals[r], rows->tupdesc, old_status_column, &isnull);
	Datum		new_status = SPI_getbinval(rows->vals[r], rows->tupdesc, old_status_column + 1, &isnull);
	NullableDatum event[HISTORY_COLUMNS] = {HISTORY_VALUE(run_id), HISTORY_NULL, HISTORY_NULL,
	HISTORY_VALUE(old_status), HISTORY_VALUE(new_status), HISTORY_NULL};

	if (cloacina_history_keeps_expected() || strcmp(TextDatumGetCString(new_status), "completed") != 0)
		cloacina_history_add(history, event);
	cloacina_wake_waiters_at_commit(DatumGetInt64(run_id));
}

/* Inside an SPI connection: ends the runs "run_ids" (bigint[]), whose rows the caller holds. */
void
cloacina_finalize_runs(const char *schema, Datum run_ids, const char *forced_status,
					   const char *forced_error)
{
	Oid			argtypes[4] = {INT8ARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[4];
	char		nulls[4] = {' ', forced_status ? ' ' : 'n', forced_error ? ' ' : 'n', ' '};
	History    *history = cloacina_history_begin();

	args[0] = run_ids;
	args[1] = forced_status ? CStringGetTextDatum(forced_status) : (Datum) 0;
	args[2] = forced_error ? CStringGetTextDatum(forced_error) : (Datum) 0;
	args[3] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	cloacina_execute_tenant(finalize_sql, schema, 4, argtypes, args, nulls);
	for (uint64 r = 0; r < SPI_processed; r++)
		log_run_end(history, SPI_tuptable, r, 1, 2);
	cloacina_history_write(schema, history);
}

/* cloacina._finalize(s, run_ids, forced_status, forced_error) */
Datum
cloacina_finalize(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);

	if (!PG_ARGISNULL(1))
	{
		SPI_connect();
		cloacina_finalize_runs(path.schema, PG_GETARG_DATUM(1),
							   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)),
							   PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)));
		SPI_finish();
	}
	cloacina_leave_tenant_path(&path);
	PG_RETURN_VOID();
}

/* An output must be a JSON object within the context limits. */
static void
require_object(Datum task_id, bool task_id_null, Datum output)
{
	const char *task = task_id_null ? "NULL" : psprintf(INT64_FORMAT, DatumGetInt64(task_id));

	if (!JB_ROOT_IS_OBJECT(DatumGetJsonbP(output)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the output context of task %s must be a JSON object (got %s)", task,
						TextDatumGetCString(DirectFunctionCall1(jsonb_typeof, output)))));
	cloacina_check_context(DatumGetJsonbP(output), psprintf("the output context of task %s", task));
}

/*
 * Completes the tasks of the arrays task_ids (bigint[]), fences (bigint[]) and outputs
 * (jsonb[]) in "schema" (the tenant path entered, outputs checked). Returns the accepted task
 * ids, sorted, and their number in *n_accepted.
 */
static int64 *
complete_tasks(const char *schema, Datum task_ids, Datum fences, Datum outputs, int n,
			   int *n_accepted)
{
	Oid			argtypes[5] = {INT8ARRAYOID, INT8ARRAYOID, JSONBARRAYOID, TEXTOID, TIMESTAMPTZOID};
	Datum		args[5] = {task_ids, fences, outputs, CStringGetTextDatum("running"),
	TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};
	SPITupleTable *runs;
	uint64		n_runs;
	int64	   *accepted = palloc(sizeof(int64) * Max(n, 1));
	bool		isnull;
	History    *history;

	*n_accepted = 0;
	SPI_connect();
	history = cloacina_history_begin();
	cloacina_execute_tenant(complete_sql, schema, 5, argtypes, args, NULL);
	runs = SPI_tuptable;		/* kept until SPI_finish */
	n_runs = SPI_processed;

	/*
	 * The completed tasks' events, then the ended runs': the order they
	 * happened in.
	 */
	for (uint64 r = 0; r < n_runs; r++)
	{
		Datum		run_id = SPI_getbinval(runs->vals[r], runs->tupdesc, 1, &isnull);
		Datum	   *task_ids,
				   *tasks,
				   *attempts;
		int			n_tasks;

		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(runs->vals[r], runs->tupdesc, 3, &isnull)),
						  INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &task_ids, NULL, &n_tasks);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(runs->vals[r], runs->tupdesc, 2, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &tasks, NULL, &n_tasks);
		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(runs->vals[r], runs->tupdesc, 5, &isnull)),
						  INT4OID, 4, true, TYPALIGN_INT, &attempts, NULL, &n_tasks);
		for (int i = 0; i < n_tasks; i++)
		{
			NullableDatum event[HISTORY_COLUMNS] = {HISTORY_VALUE(run_id), HISTORY_VALUE(tasks[i]),
				HISTORY_VALUE(attempts[i]), HISTORY_TEXT("running"), HISTORY_TEXT("completed"),
			HISTORY_NULL};

			if (cloacina_history_keeps_expected())
				cloacina_history_add(history, event);
			if (*n_accepted < n)
				accepted[(*n_accepted)++] = DatumGetInt64(task_ids[i]);
		}
	}
	for (uint64 r = 0; r < n_runs; r++)
	{
		(void) SPI_getbinval(runs->vals[r], runs->tupdesc, 7, &isnull);
		if (!isnull)
			log_run_end(history, runs, r, 1, 6);
	}
	cloacina_history_write(schema, history);

	/*
	 * Runs whose completed tasks have dependents: evaluate the dependents,
	 * all runs at once.
	 */
	{
		ArrayBuildState *run_ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
		ArrayBuildState *task_names = initArrayResult(TEXTOID, CurrentMemoryContext, false);

		for (uint64 r = 0; r < n_runs; r++)
		{
			Datum		run_id = SPI_getbinval(runs->vals[r], runs->tupdesc, 1, &isnull);
			Datum	   *tasks;
			int			n_tasks;

			if (!DatumGetBool(SPI_getbinval(runs->vals[r], runs->tupdesc, 4, &isnull)))
				continue;
			deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(runs->vals[r], runs->tupdesc, 2, &isnull)),
							  TEXTOID, -1, false, TYPALIGN_INT, &tasks, NULL, &n_tasks);
			for (int i = 0; i < n_tasks; i++)
			{
				accumArrayResult(run_ids, run_id, false, INT8OID, CurrentMemoryContext);
				accumArrayResult(task_names, tasks[i], false, TEXTOID, CurrentMemoryContext);
			}
		}
		if (run_ids->nelems > 0)
			cloacina_propagate_runs(schema, makeArrayResult(run_ids, CurrentMemoryContext),
									makeArrayResult(task_names, CurrentMemoryContext));
	}
	SPI_finish();

	/*
	 * "accepted" was allocated before SPI_connect, so it outlives the
	 * connection
	 */
	qsort(accepted, *n_accepted, sizeof(int64), cloacina_compare_int64);
	return accepted;
}

/* One element of the completion arrays. */
typedef struct Submitted
{
	Datum		id,
				fence,
				output;
	bool		id_null,
				fence_null,
				output_null;
} Submitted;

static int
compare_submitted(const void *a, const void *b)
{
	const Submitted *x = a;
	const Submitted *y = b;

	int64		x_id,
				y_id;

	if (x->id_null || y->id_null)
		return (int) y->id_null - (int) x->id_null;
	x_id = DatumGetInt64(x->id);
	y_id = DatumGetInt64(y->id);
	return (x_id > y_id) - (x_id < y_id);
}

/*
 * The arrays sorted by task id, so that the completion's UPDATE locks the tasks in id order
 * (the locking order) whatever order the caller gave them in.
 */
static void
sorted_by_id(int n, Datum *ids, bool *id_nulls, Datum *fences, bool *fence_nulls,
			 Datum *outputs, bool *output_nulls, Datum *sorted)
{
	Submitted  *items = palloc(sizeof(Submitted) * n);
	Datum	   *columns[3];
	bool	   *nulls[3];
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		items[i].id = ids[i];
		items[i].fence = fences[i];
		items[i].output = outputs[i];
		items[i].id_null = id_nulls[i];
		items[i].fence_null = fence_nulls[i];
		items[i].output_null = output_nulls[i];
	}
	qsort(items, n, sizeof(Submitted), compare_submitted);
	for (int c = 0; c < 3; c++)
	{
		columns[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc(sizeof(bool) * n);
	}
	for (int i = 0; i < n; i++)
	{
		columns[0][i] = items[i].id;
		nulls[0][i] = items[i].id_null;
		columns[1][i] = items[i].fence;
		nulls[1][i] = items[i].fence_null;
		columns[2][i] = items[i].output;
		nulls[2][i] = items[i].output_null;
	}
	sorted[0] = PointerGetDatum(construct_md_array(columns[0], nulls[0], 1, dims, lbs, INT8OID, 8,
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	sorted[1] = PointerGetDatum(construct_md_array(columns[1], nulls[1], 1, dims, lbs, INT8OID, 8,
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	sorted[2] = PointerGetDatum(construct_md_array(columns[2], nulls[2], 1, dims, lbs, JSONBOID, -1,
												   false, TYPALIGN_INT));
}

/* cloacina.complete_batch(task_ids, fences, contexts) in "schema" */
static Datum
complete_batch(FunctionCallInfo fcinfo, const char *schema)
{
	Datum	   *ids,
			   *fences,
			   *outputs;
	bool	   *id_nulls,
			   *fence_nulls,
			   *output_nulls;
	int			n = cloacina_array_elements(fcinfo, 0, INT8OID, &ids, &id_nulls);
	int64	   *accepted;
	int			n_accepted;
	Datum		sorted[3];

	if (n != cloacina_array_elements(fcinfo, 1, INT8OID, &fences, &fence_nulls) ||
		n != cloacina_array_elements(fcinfo, 2, JSONBOID, &outputs, &output_nulls))
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids, fences and contexts must have the same length")));
	for (int i = 0; i < n; i++)
		if (!output_nulls[i])
			require_object(ids[i], id_nulls[i], outputs[i]);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n <= 0)
		return (Datum) 0;
	sorted_by_id(n, ids, id_nulls, fences, fence_nulls, outputs, output_nulls, sorted);
	accepted = complete_tasks(schema, sorted[0], sorted[1], sorted[2], n, &n_accepted);
	cloacina_return_accepted(fcinfo, ids, id_nulls, n, accepted, n_accepted);
	return (Datum) 0;
}

/* One attempt of a task completed, in "schema" (the tenant path entered); false if refused. */
bool
cloacina_complete_task(const char *schema, int64 task_id, int64 fence, Datum output)
{
	int			n_accepted;

	if (output != (Datum) 0)
		require_object(Int64GetDatum(task_id), false, output);
	complete_tasks(schema, cloacina_one_element_array(Int64GetDatum(task_id), false, INT8OID),
				   cloacina_one_element_array(Int64GetDatum(fence), false, INT8OID),
				   cloacina_one_element_array(output, output == (Datum) 0, JSONBOID), 1, &n_accepted);
	return n_accepted > 0;
}

/* cloacina.complete_batch(task_ids, fences, contexts): in the caller's current schema */
Datum
cloacina_complete_batch_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, complete_batch);
}

/* cloacina.complete(task_id, fence, context) in "schema" */
static Datum
complete_one(FunctionCallInfo fcinfo, const char *schema)
{
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
		return BoolGetDatum(cloacina_complete_task(schema, PG_GETARG_INT64(0), PG_GETARG_INT64(1),
												   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2)));
	if (!PG_ARGISNULL(2))		/* nothing to complete, but a bad output is
								 * still an error */
		require_object(PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0), PG_ARGISNULL(0),
					   PG_GETARG_DATUM(2));
	return BoolGetDatum(false);
}

/* cloacina.complete(task_id, fence, context): in the caller's current schema */
Datum
cloacina_complete_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, complete_one);
}
