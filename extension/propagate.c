/*
 * propagate.c: cloacina._propagate(s, run_id, finished), what happens after tasks of runs
 * became terminal: their dependents are counted down; a dependent whose last dependency just
 * ended is evaluated (trigger rule, then context condition) and becomes ready (held as waiting
 * while the run is paused) or skipped, and skips cascade. When no task of a run is left, the
 * run is finalised. All inside the caller's transaction, which holds the runs' row locks.
 *
 * Each round is one set-based statement, whatever the number of runs and dependents (a batch
 * of diamond roots readies all their branches at once); only skips need another round.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_propagate);

/*
 * $1 run ids, $2 task names: task $2[i] of run $1[i] just ended (any number of runs, whose rows
 * the caller holds); $3 now() (a parameter: Citus refuses a volatile CASE, docs/citus.md); $4
 * whether a dependent made ready is an event (cloacina.history, history.c). The
 * dependents are decided from the rows as they were before this statement (their
 * dependencies' outcomes were written by earlier statements), so one UPDATE writes each
 * dependent once: its countdown and, when it reached zero, its new status and input. A
 * dependent's input is the run's input merged with the outputs of its completed dependencies in
 * declaration order. "writes" joins with a FULL JOIN what a LEFT JOIN would say ("decided" is
 * part of "cand"), so that it cannot be a nested loop (complete.c says why).
 */
static const char *const propagate_sql =
"WITH d AS ("
"    SELECT f.execution_id, dep AS task, count(*)::int AS n"
"      FROM unnest($1::bigint[], $2::text[]) AS e(execution_id, task)"
"      JOIN %1$s.tasks f ON f.execution_id = e.execution_id AND f.task = e.task,"
"           unnest(f.dependents) AS dep"
"     GROUP BY f.execution_id, dep),"
" cand AS ("
"    SELECT t.id, t.execution_id, t.task, t.trigger_rule, t.condition, t.dependencies,"
"           t.pending_deps - d.n AS pending"
"      FROM d JOIN %1$s.tasks t ON t.execution_id = d.execution_id AND t.task = d.task"
"     WHERE t.status = 'waiting'),"
" evaluated AS ("
"    SELECT c.id, c.trigger_rule, c.condition, r.status AS run_status, x.*"
"      FROM cand c JOIN %1$s.executions r ON r.id = c.execution_id,"
"           LATERAL (SELECT count(*) FILTER (WHERE y.status = 'completed') AS n_ok,"
"                           count(*) FILTER (WHERE y.status = 'failed') AS n_failed,"
"                           count(*) FILTER (WHERE y.ord > 0) AS n_all,"
"                           cloacina.context_merge_agg(y.output ORDER BY y.ord)"
"                               FILTER (WHERE y.ord = 0 OR y.status = 'completed') AS input"
"                      FROM (SELECT NULL::text AS status, r.input_context AS output, 0::bigint AS ord"
"                            UNION ALL"
"                            SELECT t.status, t.output, u.ord"
"                              FROM unnest(c.dependencies) WITH ORDINALITY AS u(task, ord)"
"                              JOIN %1$s.tasks t ON t.execution_id = c.execution_id AND t.task = u.task) y) x"
"     WHERE c.pending = 0),"
" decided AS MATERIALIZED ("		/* evaluated once, not once per candidate
									 * it is joined to */
"    SELECT e.id, e.input,"
"           CASE WHEN e.holds THEN CASE WHEN e.run_status = 'paused' THEN 'waiting' ELSE 'ready' END"
"                ELSE 'skipped' END AS status,"
"           CASE WHEN e.holds THEN NULL"
"                WHEN e.condition IS NOT NULL AND e.n_ok = e.n_all THEN 'condition not met'"
"                ELSE format('trigger rule %%s not met', e.trigger_rule) END AS detail"
"      FROM (SELECT ev.*,"
"                   CASE ev.trigger_rule"
"                        WHEN 'all_success' THEN ev.n_ok = ev.n_all"
"                        WHEN 'one_success' THEN ev.n_ok > 0"
"                        WHEN 'one_failed' THEN ev.n_failed > 0"
"                        ELSE true"		/* all_done, always: every dependency
										 * has ended */
"                   END AND (ev.condition IS NULL OR cloacina._condition_holds(ev.condition, ev.input)) AS holds"
"              FROM evaluated ev) e),"
" writes AS MATERIALIZED ("		/* one narrow row per dependent: the UPDATE
								 * copies whole rows of what it joins */
"    SELECT c.id, c.pending, dc.status, dc.input, dc.detail"
"      FROM cand c FULL JOIN decided dc ON dc.id = c.id),"
" changed AS ("
"    UPDATE %1$s.tasks t"
"       SET pending_deps = w.pending,"
"           status = coalesce(w.status, t.status),"
"           input = CASE WHEN w.status IS NULL THEN t.input ELSE w.input END,"
"           ready_at = CASE WHEN w.status IN ('ready', 'waiting') THEN $3 ELSE t.ready_at END,"
"           finished_at = CASE WHEN w.status = 'skipped' THEN $3 ELSE t.finished_at END"
"      FROM writes w"
"     WHERE t.id = w.id"
"    RETURNING t.id, t.execution_id, t.task, t.kind, w.status, w.detail, t.priority),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
"    SELECT execution_id, task, 0, 'waiting', status, detail FROM changed"
"     WHERE status = 'skipped' OR (status = 'ready' AND $4) ORDER BY id)"
" SELECT array_agg(execution_id ORDER BY id) FILTER (WHERE status = 'skipped'),"
"        array_agg(task ORDER BY id) FILTER (WHERE status = 'skipped'),"
"        coalesce(bool_or(status = 'ready' AND kind = 'handler'), false),"
"        coalesce(bool_or(status = 'ready' AND kind = 'sql'), false),"
"        min(-priority) FILTER (WHERE status = 'ready' AND kind = 'handler'),"
"        min(id) FILTER (WHERE status = 'ready' AND kind = 'handler')"
"   FROM changed";

/*
 * $1 run ids, once per task of theirs that ended: counts the runs down and returns those with
 * nothing left (in id order), to be ended.
 */
static const char *const count_down_sql =
"WITH finished AS ("
"    SELECT execution_id, count(*)::int AS n FROM unnest($1::bigint[]) AS u(execution_id)"
"     GROUP BY execution_id),"
" counted AS ("
"    UPDATE %1$s.executions e SET pending_tasks = e.pending_tasks - f.n"
"      FROM finished f"
"     WHERE e.id = f.execution_id AND e.pending_tasks > f.n RETURNING e.id)"
" SELECT array_agg(f.execution_id ORDER BY f.execution_id) FROM finished f"
"  WHERE NOT EXISTS (SELECT FROM counted c WHERE c.id = f.execution_id)";

/*
 * Inside an SPI connection, the tenant path entered: task_names[i] (text[]) of run run_ids[i]
 * (bigint[]) ended, for any number of runs whose rows the caller holds. A few statements for the
 * whole set: one per round of skips, one count-down, one finalize for the runs it ended.
 */
void
cloacina_propagate_runs(const char *schema, Datum run_ids, Datum task_names)
{
	Oid			argtypes[4] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID, BOOLOID};
	Datum		args[4] = {run_ids, task_names, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
	BoolGetDatum(cloacina_history_keeps_expected())};
	Datum		terminal = run_ids; /* a run's id once per task of it that
									 * ended */
	bool		any_ready = false;
	bool		any_sql = false;
	bool		isnull;

	for (;;)
	{
		Datum		skipped_runs;

		cloacina_execute_tenant(propagate_sql, schema, 4, argtypes, args, NULL);
		skipped_runs = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
		{
			/* the tasks made ready are ready from $3 */
			ClaimKey	least = {
				DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull)),
				DatumGetTimestampTz(args[2]),
			DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull))};

			cloacina_claim_floor_lower(schema, &least);
			any_ready = true;
		}
		any_sql |= DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		if (DatumGetPointer(skipped_runs) == NULL)
			break;
		/* Skips cascade: the skipped tasks ended too. */
		args[0] = skipped_runs;
		args[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		terminal = DirectFunctionCall2(array_cat, terminal, skipped_runs);
	}

	if (any_ready)
		cloacina_hint_ready(schema);
	if (any_sql)
		cloacina_due_push(schema, GetCurrentTransactionStartTimestamp(), true);

	{
		Oid			count_types[1] = {INT8ARRAYOID};
		Datum		ended;

		cloacina_execute_tenant(count_down_sql, schema, 1, count_types, &terminal, NULL);
		ended = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			cloacina_finalize_runs(schema, ended, NULL, NULL);
	}
}

/* The same for the tasks "finished" (text[]) of one run. */
void
cloacina_propagate_run(const char *schema, Datum run_id, Datum finished)
{
	ArrayType  *names = DatumGetArrayTypeP(finished);
	int			n = ArrayGetNItems(ARR_NDIM(names), ARR_DIMS(names));
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		ids[i] = run_id;
	cloacina_propagate_runs(schema, PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
																	TYPALIGN_DOUBLE)),
							PointerGetDatum(names));
}

/* cloacina._propagate(s, run_id, finished) */
Datum
cloacina_propagate(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);

	if (!PG_ARGISNULL(1) && !PG_ARGISNULL(2))
	{
		SPI_connect();
		cloacina_propagate_run(path.schema, PG_GETARG_DATUM(1), PG_GETARG_DATUM(2));
		SPI_finish();
	}
	cloacina_leave_tenant_path(&path);
	PG_RETURN_VOID();
}
