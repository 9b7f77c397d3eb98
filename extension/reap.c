/*
 * reap.c: cloacina._reap(s, max_tasks), the end of attempts whose worker is gone: a handler
 * task whose lease ran out (its worker vanished) or whose timeout passed, a SQL task whose lease
 * ran out or that no pool worker runs any more (killed, or the server restarted; a SQL task's
 * worker enforces its timeout itself). The background worker calls it on every tick of a
 * tenant; it is also safe to call by hand. Returns how many attempts it ended.
 *
 * Each such attempt ends through the failure of fail.c, like any failed attempt: the task goes
 * back to ready for its next attempt, at once (its worker failed, not the task), or fails as
 * abandoned once its attempts are used up, and its dependents are decided. The failure takes
 * only the attempts the reaper saw (same fence and lease): a worker whose heartbeat renewed
 * the lease meanwhile keeps its task.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_reap);

/*
 * $1 max tasks. The running tasks that may be over, in run order (the locking order), with the
 * error their attempt ends with. A SQL task whose lease has not run out is over only when no
 * pool worker runs it ("check_alive"), which only shared memory knows. Each kind of candidate
 * comes from its own index (tasks_lease_expiry, tasks_sql_running, tasks_timeout_at): a tenant
 * that holds millions of claimed tasks must not make every tick read them all. The candidates
 * are then read by primary key, behind OFFSET 0: with their status test beside it, the planner
 * read every entry of tasks_lease_expiry instead (running tasks' and finished ones' alike,
 * 800 ms a tick in a 19-million-run burn-down).
 */
static const char *const reapable_sql =
"SELECT t.id, t.fence, t.lease_until, t.kind = 'sql' AND t.lease_until >= now() AS check_alive,"
"       CASE WHEN t.kind = 'handler' AND t.timeout_ms IS NOT NULL"
"                 AND (t.started_at AT TIME ZONE 'UTC') + t.timeout_ms * interval '1 millisecond'"
"                     < (now() AT TIME ZONE 'UTC')"
"            THEN format('attempt %%s timed out after %%s ms', t.attempt, t.timeout_ms)"
"            WHEN t.kind = 'sql' AND t.lease_until >= now()"
"            THEN format('attempt %%s abandoned: its worker %%s stopped while running it',"
"                        t.attempt, quote_literal(t.worker))"
"            ELSE format('attempt %%s abandoned: the lease of worker %%s expired',"
"                        t.attempt, quote_literal(t.worker))"
"       END || CASE WHEN t.attempt < t.max_attempts THEN '' ELSE ' (no attempts left)' END,"
"       t.execution_id, t.task"
"  FROM (SELECT * FROM %1$s.tasks"
"         WHERE id = ANY (ARRAY("
"        (SELECT id FROM %1$s.tasks WHERE status = 'running' AND lease_until < now()"
"          ORDER BY lease_until LIMIT $1)"
"        UNION ALL"
"        (SELECT id FROM %1$s.tasks WHERE status = 'running' AND kind = 'sql' LIMIT $1)"
"        UNION ALL"
"        (SELECT id FROM %1$s.tasks WHERE status = 'running' AND timeout_ms IS NOT NULL"
"            AND (started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond'"
"                < (now() AT TIME ZONE 'UTC')"
"          ORDER BY (started_at AT TIME ZONE 'UTC') + timeout_ms * interval '1 millisecond' LIMIT $1)))"
"        OFFSET 0) t"
" WHERE t.status = 'running'"
" ORDER BY t.execution_id, t.id"
" LIMIT $1";

/* Ends up to "max_tasks" attempts of "schema" (the tenant path entered) whose worker is gone. */
int
cloacina_reap_tasks(const char *schema, int max_tasks)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(max_tasks)};
	ArrayBuildState *ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ArrayBuildState *fences = initArrayResult(INT8OID, CurrentMemoryContext, false);
	ArrayBuildState *leases = initArrayResult(TIMESTAMPTZOID, CurrentMemoryContext, false);
	ArrayBuildState *errors = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	ArrayBuildState *retryable = initArrayResult(BOOLOID, CurrentMemoryContext, false);
	List	   *log_lines = NIL;
	int			n = 0;
	int			n_accepted = 0;
	int64	   *accepted;
	ListCell   *lc;

	SPI_connect();
	cloacina_execute_tenant(reapable_sql, schema, 1, argtypes, args, NULL);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	row = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		lease_null;
		int64		id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		Datum		lease = SPI_getbinval(row, desc, 3, &lease_null);

		if (DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)) && cloacina_sqlslot_runs(schema, id))
			continue;			/* a pool worker runs it: its attempt goes on */
		accumArrayResult(ids, Int64GetDatum(id), false, INT8OID, CurrentMemoryContext);
		accumArrayResult(fences, SPI_getbinval(row, desc, 2, &isnull), false, INT8OID, CurrentMemoryContext);
		accumArrayResult(leases, lease, lease_null, TIMESTAMPTZOID, CurrentMemoryContext);
		accumArrayResult(errors, CStringGetTextDatum(SPI_getvalue(row, desc, 5)), false, TEXTOID,
						 CurrentMemoryContext);
		accumArrayResult(retryable, BoolGetDatum(true), false, BOOLOID, CurrentMemoryContext);
		log_lines = lappend(log_lines, psprintf("task %s of run %s: %s",
												quote_literal_cstr(SPI_getvalue(row, desc, 7)),
												SPI_getvalue(row, desc, 6), SPI_getvalue(row, desc, 5)));
		n++;
	}

	if (n > 0)
	{
		TaskFailures failures = {0};
		int			i = 0;

		failures.task_ids = makeArrayResult(ids, CurrentMemoryContext);
		failures.fences = makeArrayResult(fences, CurrentMemoryContext);
		failures.errors = makeArrayResult(errors, CurrentMemoryContext);
		failures.retryable = makeArrayResult(retryable, CurrentMemoryContext);
		failures.seen_leases = makeArrayResult(leases, CurrentMemoryContext);
		failures.retry_now = true;
		accepted = cloacina_fail_tasks(schema, &failures, n, &n_accepted);

		/*
		 * a log line for each attempt ended; the ids were collected in run
		 * order, not id order
		 */
		foreach(lc, log_lines)
		{
			int64		id = DatumGetInt64(ids->dvalues[i++]);

			if (bsearch(&id, accepted, n_accepted, sizeof(int64), cloacina_compare_int64) != NULL)
				cloacina_log_event(schema, lfirst(lc));
		}
	}
	SPI_finish();
	return n_accepted;
}

/* cloacina._reap(s, max_tasks) */
Datum
cloacina_reap(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);
	int			reaped = cloacina_reap_tasks(path.schema, PG_ARGISNULL(1) ? 1000 : PG_GETARG_INT32(1));

	cloacina_leave_tenant_path(&path);
	PG_RETURN_INT32(reaped);
}
