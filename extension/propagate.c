/*
 * propagate.c: cloacina._propagate(s, run_id, finished), what happens after tasks of a run
 * became terminal: their dependents are counted down; a dependent whose last dependency just
 * ended is evaluated (trigger rule, then context condition) and becomes ready (held as waiting
 * while the run is paused) or skipped, and skips cascade. When no task of the run is left, the
 * run is finalised. All inside the caller's transaction, which holds the run's row lock.
 *
 * Each round is one set-based statement, whatever the number of dependents (a diamond's root
 * readies its three branches at once); only skips need another round.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_propagate);

/*
 * $1 run id, $2 the tasks that just ended. The dependents are decided from the rows as they
 * were before this statement (their dependencies' outcomes were written by earlier statements),
 * so one UPDATE writes each dependent once: its countdown and, when it reached zero, its new
 * status and input. A dependent's input is the run's input merged with the outputs of its
 * completed dependencies in declaration order.
 */
static const char *const propagate_sql =
"WITH d AS ("
"    SELECT dep AS task, count(*)::int AS n"
"      FROM %1$s.tasks f, unnest(f.dependents) AS dep"
"     WHERE f.execution_id = $1 AND f.task = ANY ($2)"
"     GROUP BY dep),"
" cand AS ("
"    SELECT t.id, t.task, t.trigger_rule, t.condition, t.dependencies, t.pending_deps - d.n AS pending"
"      FROM d JOIN %1$s.tasks t ON t.execution_id = $1 AND t.task = d.task"
"     WHERE t.status = 'waiting'),"
" evaluated AS ("
"    SELECT c.id, c.trigger_rule, c.condition, r.status AS run_status, x.*"
"      FROM cand c, %1$s.executions r,"
"           LATERAL (SELECT count(*) FILTER (WHERE y.status = 'completed') AS n_ok,"
"                           count(*) FILTER (WHERE y.status = 'failed') AS n_failed,"
"                           count(*) FILTER (WHERE y.ord > 0) AS n_all,"
"                           cloacina.context_merge_agg(y.output ORDER BY y.ord)"
"                               FILTER (WHERE y.ord = 0 OR y.status = 'completed') AS input"
"                      FROM (SELECT NULL::text AS status, r.input_context AS output, 0::bigint AS ord"
"                            UNION ALL"
"                            SELECT t.status, t.output, u.ord"
"                              FROM unnest(c.dependencies) WITH ORDINALITY AS u(task, ord)"
"                              JOIN %1$s.tasks t ON t.execution_id = $1 AND t.task = u.task) y) x"
"     WHERE c.pending = 0 AND r.id = $1),"
" decided AS ("
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
"                        ELSE true"	/* all_done, always: every dependency has ended */
"                   END AND (ev.condition IS NULL OR cloacina._condition_holds(ev.condition, ev.input)) AS holds"
"              FROM evaluated ev) e),"
" changed AS ("
"    UPDATE %1$s.tasks t"
"       SET pending_deps = c.pending,"
"           status = coalesce(dc.status, t.status),"
"           input = CASE WHEN dc.id IS NULL THEN t.input ELSE dc.input END,"
"           ready_at = CASE WHEN dc.status IN ('ready', 'waiting') THEN now() ELSE t.ready_at END,"
"           finished_at = CASE WHEN dc.status = 'skipped' THEN now() ELSE t.finished_at END"
"      FROM cand c LEFT JOIN decided dc ON dc.id = c.id"
"     WHERE t.id = c.id"
"    RETURNING t.id, t.task, t.kind, dc.status, dc.detail),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
"    SELECT $1, task, 0, 'waiting', status, detail FROM changed"
"     WHERE status IN ('ready', 'skipped') ORDER BY id)"
" SELECT array_agg(task ORDER BY id) FILTER (WHERE status = 'skipped'),"
"        coalesce(bool_or(status = 'ready' AND kind = 'handler'), false),"
"        coalesce(bool_or(status = 'ready' AND kind = 'sql'), false)"
"   FROM changed";

/* $1 run id, $2 tasks that ended: counts the run down; true when nothing of it is left. */
static const char *const count_down_sql =
"WITH counted AS ("
"    UPDATE %1$s.executions SET pending_tasks = pending_tasks - $2"
"     WHERE id = $1 AND pending_tasks > $2 RETURNING id)"
" SELECT count(*) = 0 FROM counted";

/* Inside an SPI connection, the tenant path entered. */
void
cloacina_propagate_run(const char *schema, Datum run_id, Datum finished)
{
	Oid			argtypes[2] = {INT8OID, TEXTARRAYOID};
	Datum		args[2] = {run_id, finished};
	int64		terminal = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(finished)),
										  ARR_DIMS(DatumGetArrayTypeP(finished)));
	bool		any_ready = false;
	bool		any_sql = false;
	bool		isnull;

	for (;;)
	{
		Datum		skipped;

		cloacina_execute_tenant(propagate_sql, schema, 2, argtypes, args, NULL);
		skipped = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		any_ready |= DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		any_sql |= DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		if (DatumGetPointer(skipped) == NULL)
			break;
		/* Skips cascade: the skipped tasks ended too. */
		args[1] = skipped;
		terminal += ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(skipped)), ARR_DIMS(DatumGetArrayTypeP(skipped)));
	}

	if (any_ready)
		cloacina_hint_ready(schema);
	if (any_sql)
		cloacina_due_push(schema, GetCurrentTransactionStartTimestamp(), true);

	{
		Oid			count_types[2] = {INT8OID, INT8OID};
		Datum		count_args[2] = {run_id, Int64GetDatum(terminal)};

		cloacina_execute_tenant(count_down_sql, schema, 2, count_types, count_args, NULL);
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			Datum		one = run_id;

			cloacina_finalize_runs(schema,
								   PointerGetDatum(construct_array(&one, 1, INT8OID, 8, FLOAT8PASSBYVAL,
																   TYPALIGN_DOUBLE)),
								   NULL, NULL);
		}
	}
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
