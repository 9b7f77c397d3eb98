/*
 * claim.c: cloacina._claim(s, worker, task_names, max_tasks, lease), the claim of ready handler
 * tasks: one statement picks them in claim order skipping rows other workers hold, takes them
 * with a new fence and lease, and logs them. Written in C with a generic plan prepared once per
 * backend and tenant, because the claim is on every task's path (design §8).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_claim);
PG_FUNCTION_INFO_V1(cloacina_claim_current);

/*
 * $1 worker, $2 task names (NULL: any), $3 max tasks, $4 lease. The UPDATE takes the picked
 * ids as an array so that its plan is an index lookup whatever the generic plan assumes about
 * LIMIT $3. "deadline" is when the background worker must look at the task (lease or timeout).
 */
static const char *const claim_sql =
"WITH picked AS ("
"    SELECT t.id FROM %1$s.tasks t"
"     WHERE t.status = 'ready' AND t.kind = 'handler' AND t.ready_at <= now()"
"       AND ($2::text[] IS NULL OR t.task = ANY ($2) OR (t.workflow || '.' || t.task) = ANY ($2))"
"       AND (SELECT state FROM %1$s.tenant_settings) = 'active'"
"     ORDER BY t.priority DESC, t.ready_at, t.id"
"     LIMIT $3"
"     FOR UPDATE SKIP LOCKED),"
" claimed AS ("
"    UPDATE %1$s.tasks t"
"       SET status = 'running', attempt = t.attempt + 1, fence = t.fence + 1, lease = $4,"
"           lease_until = now() + $4, worker = $1, started_at = now()"
"     WHERE t.id = ANY (ARRAY(SELECT id FROM picked))"
"    RETURNING t.id, t.execution_id, t.workflow, t.task, t.attempt, t.fence, t.input,"
"              t.priority, t.ready_at, t.timeout_ms),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
"    SELECT c.execution_id, c.task, c.attempt, 'ready', 'running', 'claimed by ' || $1 FROM claimed c)"
" SELECT c.id, c.execution_id, c.workflow, c.task, c.attempt, c.fence, c.input,"
"        least(now() + $4, now() + c.timeout_ms * interval '1 millisecond') AS deadline"
"   FROM claimed c"
"  ORDER BY c.priority DESC, c.ready_at, c.id";

#define CLAIM_COLUMNS 7

/* Whether any handler task of the tenant is ready now (claimed or not by others meanwhile). */
static const char *const any_ready_sql =
"SELECT EXISTS (SELECT 1 FROM %1$s.tasks t"
"                WHERE t.status = 'ready' AND t.kind = 'handler' AND t.ready_at <= now())";

static const Interval no_time = {0};

/*
 * The claim for "schema" (the tenant path entered); the arguments from "first" on are worker,
 * task names, max tasks and lease.
 */
static Datum
claim(FunctionCallInfo fcinfo, const char *schema, int first)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[4] = {TEXTOID, TEXTARRAYOID, INT4OID, INTERVALOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	TimestampTz first_deadline = DT_NOEND;
	uint64		claimed;
	int			max_tasks_arg = first + 2;
	int			lease_arg = first + 3;

	if (PG_ARGISNULL(max_tasks_arg) || PG_GETARG_INT32(max_tasks_arg) < 1 ||
		PG_GETARG_INT32(max_tasks_arg) > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and 1000 (got %s)",
						PG_ARGISNULL(max_tasks_arg) ? "NULL"
						: psprintf("%d", PG_GETARG_INT32(max_tasks_arg)))));
	if (PG_ARGISNULL(lease_arg) ||
		DatumGetBool(DirectFunctionCall2(interval_le, PG_GETARG_DATUM(lease_arg),
										 IntervalPGetDatum(&no_time))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be a positive interval (got %s)",
						PG_ARGISNULL(lease_arg) ? "NULL"
						: DatumGetCString(DirectFunctionCall1(interval_out, PG_GETARG_DATUM(lease_arg))))));

	args[0] = PG_ARGISNULL(first) ? CStringGetTextDatum("") : PG_GETARG_DATUM(first);
	args[1] = PG_ARGISNULL(first + 1) ? (Datum) 0 : PG_GETARG_DATUM(first + 1);
	nulls[1] = PG_ARGISNULL(first + 1) ? 'n' : ' ';
	args[2] = PG_GETARG_DATUM(max_tasks_arg);
	args[3] = PG_GETARG_DATUM(lease_arg);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	SPI_connect();
	cloacina_execute_tenant(claim_sql, schema, 4, argtypes, args, nulls);
	claimed = SPI_processed;
	for (uint64 r = 0; r < claimed; r++)
	{
		Datum		row[CLAIM_COLUMNS + 1];
		bool		isnull[CLAIM_COLUMNS + 1];

		heap_deform_tuple(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, row, isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
		if (DatumGetTimestampTz(row[CLAIM_COLUMNS]) < first_deadline)
			first_deadline = DatumGetTimestampTz(row[CLAIM_COLUMNS]);
	}

	/*
	 * This transaction made tasks ready (a completion that claims) and the
	 * claim took fewer than it could: if no ready task is left, whatever it
	 * made ready is claimed, and the "ready" hint would only wake other
	 * workers to claim nothing.
	 */
	if (claimed < (uint64) PG_GETARG_INT32(max_tasks_arg) && cloacina_hint_ready_pending(schema))
	{
		bool		isnull;

		cloacina_execute_tenant(any_ready_sql, schema, 0, argtypes, NULL, NULL);
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			cloacina_withdraw_hint_ready(schema);
	}
	SPI_finish();

	/*
	 * The background worker must look at this tenant when the first lease or
	 * timeout can expire.
	 */
	if (first_deadline != DT_NOEND)
		cloacina_due_push(schema, first_deadline, false);
	return (Datum) 0;
}

/* cloacina._claim(s, worker, task_names, max_tasks, lease) */
Datum
cloacina_claim(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);

	claim(fcinfo, path.schema, 1);
	cloacina_leave_tenant_path(&path);
	return (Datum) 0;
}

/* cloacina.claim(worker, task_names, max_tasks, lease): in the caller's current schema */
Datum
cloacina_claim_current(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, -1);

	claim(fcinfo, path.schema, 0);
	cloacina_leave_tenant_path(&path);
	return (Datum) 0;
}
