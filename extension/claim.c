/*
 * claim.c: the claim of ready tasks, for cloacina.claim(worker, task_names, max_tasks, lease,
 * wait) (handler tasks) and for the SQL-task pool (sqltask.c): one statement picks them in claim
 * order skipping rows other workers hold, takes them with a new fence and lease, and logs them.
 * Written in C with a generic plan prepared once per backend and tenant, because the claim is
 * on every task's path (design §8).
 *
 * A claim given a wait that finds nothing sleeps until a transaction makes the tenant's tasks
 * ready (wait.c) and claims again, so that a worker's wake-up and its claim are one round trip.
 * It waits at most cloacina.max_claim_wait: its snapshot holds back vacuum meanwhile.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_claim_current);

/*
 * The claim statement, one text for both kinds of task ("kind" a literal, so that the partial
 * indexes on ready tasks apply to the generic plan; "returned" the extra columns the SQL-task
 * pool needs). $1 worker, $2 task names (NULL: any), $3 max tasks, $4 lease, $5 now (a waiting
 * claim's clock, not its transaction's start: docs/citus.md, rule 2). The UPDATE takes
 * the picked ids as an array so that its plan is an index lookup whatever the generic plan
 * assumes about LIMIT $3. "deadline" is when the background worker must look at the task
 * (lease or timeout). The claims' events are written apart (history.c).
 * Handler tasks are picked in the order of the index tasks_claim_key, from the tenant's claim
 * floor ($6, $7, $8: claim_floor.c); a tenant that has not yet migrated to it (its layout 1)
 * and SQL tasks in the order of their claim-order indexes, from the start.
 */
#define CLAIM_SQL(kind, from, order, returned) \
"WITH picked AS (" \
"    SELECT t.id FROM %1$s.tasks t" \
"     WHERE t.status = 'ready' AND t.kind = '" kind "' AND t.ready_at <= $5" from \
"       AND ($2::text[] IS NULL OR t.task = ANY ($2) OR (t.workflow || '.' || t.task) = ANY ($2))" \
"       AND (SELECT state FROM %1$s.tenant_settings) = 'active'" \
"     ORDER BY " order \
"     LIMIT $3" \
"     FOR UPDATE SKIP LOCKED)," \
" claimed AS (" \
"    UPDATE %1$s.tasks t" \
"       SET status = 'running', attempt = t.attempt + 1, fence = t.fence + 1, lease = $4," \
"           lease_until = $5 + $4, worker = $1, started_at = $5" \
"     WHERE t.id = ANY (ARRAY(SELECT id FROM picked))" \
"    RETURNING t.id, t.execution_id, t.workflow, t.task, t.attempt, t.fence, t.input," \
"              t.priority, t.ready_at, t.timeout_ms, t.sql)" \
" SELECT c.id, c.execution_id, c.workflow, c.task, c.attempt, c.fence, c.input," \
"        least($5 + $4, $5 + c.timeout_ms * interval '1 millisecond') AS deadline" returned \
"   FROM claimed c" \
"  ORDER BY c.priority DESC, c.ready_at, c.id"

#define CLAIM_ORDER "t.priority DESC, t.ready_at, t.id"
static const char *const claim_handler_tasks_sql =
CLAIM_SQL("handler", " AND (-t.priority, t.ready_at, t.id) >= ($6, $7, $8)",
		  "-t.priority, t.ready_at, t.id", "");
static const char *const claim_handler_tasks_layout1_sql = CLAIM_SQL("handler", "", CLAIM_ORDER, "");
static const char *const claim_sql_tasks_sql =
CLAIM_SQL("sql", "", CLAIM_ORDER,
		  ", c.sql, (SELECT st.role_name FROM %1$s.tenant_settings st), c.timeout_ms,"
		  " (SELECT e.deadline FROM %1$s.executions e WHERE e.id = c.execution_id)");

/*
 * Whether any handler task of the tenant is ready now (claimed or not by others meanwhile), at
 * or above the claim floor $1, $2, $3.
 */
static const char *const any_ready_sql =
"SELECT EXISTS (SELECT 1 FROM %1$s.tasks t"
"                WHERE t.status = 'ready' AND t.kind = 'handler' AND t.ready_at <= now()"
"                  AND (-t.priority, t.ready_at, t.id) >= ($1, $2, $3))";

static const Interval no_time = {0};

/* Writes one "claimed by" event per claimed row (inside SPI; the claimed rows stay valid). */
static void
log_claims(const char *schema, Datum worker, SPITupleTable *claimed, uint64 n)
{
	History    *history = cloacina_history_begin();
	Datum		detail = CStringGetTextDatum(psprintf("claimed by %s", TextDatumGetCString(worker)));

	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;
		NullableDatum event[HISTORY_COLUMNS] = {
			HISTORY_VALUE(SPI_getbinval(claimed->vals[r], claimed->tupdesc, 2, &isnull)),
			HISTORY_VALUE(SPI_getbinval(claimed->vals[r], claimed->tupdesc, 4, &isnull)),
			HISTORY_VALUE(SPI_getbinval(claimed->vals[r], claimed->tupdesc, 5, &isnull)),
		HISTORY_TEXT("ready"), HISTORY_TEXT("running"), HISTORY_VALUE(detail)};

		cloacina_history_add(history, event);
	}
	cloacina_history_write(schema, history);
}

/*
 * Claims up to "max_tasks" ready tasks of "kind" in "schema" (the tenant path entered) for
 * "worker" with "lease" at time "now"; "task_names" NULL claims any. Called inside SPI:
 * returns the claimed rows (the columns of the claim statement), valid until SPI_finish, and
 * their number in *n_claimed. Every claim goes through here: the SDK's handler tasks and the
 * pool's SQL tasks.
 */
SPITupleTable *
cloacina_claim_tasks(const char *schema, ClaimKind kind, Datum worker, Datum task_names,
					 int32 max_tasks, Datum lease, TimestampTz now, uint64 *n_claimed)
{
	Oid			argtypes[8] = {TEXTOID, TEXTARRAYOID, INT4OID, INTERVALOID, TIMESTAMPTZOID,
	INT4OID, TIMESTAMPTZOID, INT8OID};
	Datum		args[8] = {worker, task_names, Int32GetDatum(max_tasks), lease, TimestampTzGetDatum(now)};
	char		nulls[8] = {' ', task_names == (Datum) 0 ? 'n' : ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	TimestampTz first_deadline = DT_NOEND;
	SPITupleTable *claimed;
	Oid			tenant = get_namespace_oid(schema, false);
	bool		by_key = kind == CLAIM_HANDLER_TASKS &&
		OidIsValid(get_relname_relid("tasks_claim_key", tenant));
	ClaimKey	from = by_key ? cloacina_claim_floor(schema, tenant) : cloacina_least_claim_key;

	args[5] = Int32GetDatum(from.neg_priority);
	args[6] = TimestampTzGetDatum(from.ready_at);
	args[7] = Int64GetDatum(from.id);
	if (kind == CLAIM_SQL_TASK)
		cloacina_execute_tenant(claim_sql_tasks_sql, schema, 5, argtypes, args, nulls);
	else if (by_key)
		cloacina_execute_tenant(claim_handler_tasks_sql, schema, 8, argtypes, args, nulls);
	else
		cloacina_execute_tenant(claim_handler_tasks_layout1_sql, schema, 5, argtypes, args, nulls);
	claimed = SPI_tuptable;
	*n_claimed = SPI_processed;
	for (uint64 r = 0; r < *n_claimed; r++)
	{
		bool		isnull;
		TimestampTz deadline = DatumGetTimestampTz(SPI_getbinval(claimed->vals[r], claimed->tupdesc,
																 CLAIM_DEADLINE_COLUMN, &isnull));

		if (deadline < first_deadline)
			first_deadline = deadline;
	}
	if (*n_claimed > 0 && cloacina_history_keeps_expected())
		log_claims(schema, worker, claimed, *n_claimed);

	/*
	 * This transaction made tasks ready (a completion that claims) and the
	 * claim took fewer than it could: if no ready task is left, whatever it
	 * made ready is claimed, and the "ready" hint would only wake other
	 * workers to claim nothing.
	 */
	if (kind == CLAIM_HANDLER_TASKS && *n_claimed < (uint64) max_tasks &&
		cloacina_hint_ready_pending(schema))
	{
		bool		isnull;

		cloacina_execute_tenant(any_ready_sql, schema, 3, &argtypes[5], &args[5], NULL);
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			cloacina_withdraw_hint_ready(schema);
	}

	/*
	 * The background worker must look at this tenant when the first lease or
	 * timeout can expire.
	 */
	if (first_deadline != DT_NOEND)
		cloacina_due_push(schema, first_deadline, false);
	return claimed;
}

/*
 * How long the claim may wait for work, in microseconds: its "wait" argument (absent in the
 * 0.1.0 signature, which this symbol also serves), cut to cloacina.max_claim_wait.
 */
static int64
claim_wait_usecs(FunctionCallInfo fcinfo)
{
	int64		usecs;

	if (PG_NARGS() < 5 || PG_ARGISNULL(4))
		return 0;
	usecs = cloacina_interval_usecs(PG_GETARG_INTERVAL_P(4));
	if (usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must not be negative (got %s)",
						DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(4))))));
	if (usecs > 0 && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a claim that waits needs the READ COMMITTED isolation level"),
				 errdetail("In a transaction with one snapshot it could never see new work.")));
	return Min(usecs, (int64) cloacina_max_claim_wait_ms * 1000);
}

/* cloacina.claim(worker, task_names, max_tasks, lease, wait) in "schema" */
static Datum
claim_handler_tasks(FunctionCallInfo fcinfo, const char *schema)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SPITupleTable *claimed;
	uint64		n_claimed;
	int64		wait_usecs;
	TimestampTz deadline;
	WorkWait	work_wait;
	Datum		worker;
	Datum		task_names;

	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 1 || PG_GETARG_INT32(2) > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and 1000 (got %s)",
						PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2)))));
	if (PG_ARGISNULL(3) ||
		DatumGetBool(DirectFunctionCall2(interval_le, PG_GETARG_DATUM(3), IntervalPGetDatum(&no_time))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be a positive interval (got %s)",
						PG_ARGISNULL(3) ? "NULL"
						: DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(3))))));
	wait_usecs = claim_wait_usecs(fcinfo);
	deadline = GetCurrentTimestamp() + wait_usecs;
	worker = PG_ARGISNULL(0) ? CStringGetTextDatum("") : PG_GETARG_DATUM(0);
	task_names = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	SPI_connect();
	if (wait_usecs > 0)
		cloacina_work_wait_begin(&work_wait, schema);
	for (;;)
	{
		/* in READ COMMITTED each look takes a fresh snapshot */
		claimed = cloacina_claim_tasks(schema, CLAIM_HANDLER_TASKS, worker, task_names,
									   PG_GETARG_INT32(2), PG_GETARG_DATUM(3),
									   wait_usecs > 0 ? GetCurrentTimestamp()
									   : GetCurrentTransactionStartTimestamp(),
									   &n_claimed);
		if (n_claimed > 0 || wait_usecs <= 0 || GetCurrentTimestamp() >= deadline)
			break;
		SPI_freetuptable(claimed);
		cloacina_work_wait_sleep(&work_wait, deadline);
	}
	if (wait_usecs > 0)
		cloacina_work_wait_end(&work_wait);
	for (uint64 r = 0; r < n_claimed; r++)
	{
		Datum		row[CLAIM_DEADLINE_COLUMN];
		bool		isnull[CLAIM_DEADLINE_COLUMN];

		heap_deform_tuple(claimed->vals[r], claimed->tupdesc, row, isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/* cloacina.claim(worker, task_names, max_tasks, lease, wait): in the caller's current schema */
Datum
cloacina_claim_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, claim_handler_tasks);
}
