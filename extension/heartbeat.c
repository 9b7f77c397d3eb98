/*
 * heartbeat.c: cloacina.heartbeat_batch(task_ids, fences), the renewal of claimed tasks'
 * leases, and cloacina.heartbeat(task_id, fence), one task of it.
 *
 * A worker renews every task it holds in one statement per beat, and that statement holds the
 * tasks' row locks, which completions wait for, until it commits. So it is one set-based
 * statement, prepared once per backend and tenant: an SQL function called once per task cost
 * about 0.3 ms per task (300 ms for a worker holding 1,000 tasks).
 *
 * Each task gets one answer: 'ok' (lease renewed), 'cancelled' (its run was cancelled while it
 * ran; the worker should stop it), or 'lost' (its fence is no longer current, or no such task).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_heartbeat_batch_current);
PG_FUNCTION_INFO_V1(cloacina_heartbeat_current);

/*
 * $1 task ids, $2 fences, $3 'running' (a parameter, not a literal: see complete.c), $4 now
 * in UTC (cloacina_utc_now). The UPDATE visits its input sorted by id, so it locks the tasks
 * in id order, the order completions lock them in. Returns the (id, fence) pairs renewed ('ok') or whose run was
 * cancelled ('cancelled'); every other pair is 'lost'.
 */
static const char *const heartbeat_sql =
"WITH input AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS u(id, fence) ORDER BY u.id),"
" renewed AS ("
"    UPDATE %1$s.tasks t SET lease_until = ($4 + t.lease) AT TIME ZONE 'UTC'"
"      FROM input i"
"     WHERE t.id = i.id AND t.fence = i.fence AND t.status = $3"
"    RETURNING t.id, t.fence)"
" SELECT id, fence, 'ok' FROM renewed"
" UNION ALL"
" SELECT t.id, t.fence, 'cancelled' FROM input i"
"   JOIN %1$s.tasks t ON t.id = i.id AND t.fence = i.fence AND t.status = 'cancelled'";

/* The answer of one (id, fence) pair. */
typedef struct Beat
{
	int64		id;
	int64		fence;
	const char *answer;
} Beat;

static int
compare_beats(const void *a, const void *b)
{
	const Beat *x = a;
	const Beat *y = b;

	if (x->id != y->id)
		return (x->id > y->id) - (x->id < y->id);
	return (x->fence > y->fence) - (x->fence < y->fence);
}

/*
 * Renews the leases of the tasks "ids" holding "fences" (bigint[] each, same length) in
 * "schema", the tenant path entered. Returns the answers found, sorted by (id, fence), and
 * their number in *n_answers.
 */
static Beat *
renew(const char *schema, Datum ids, Datum fences, int *n_answers)
{
	Oid			types[4] = {INT8ARRAYOID, INT8ARRAYOID, TEXTOID, TIMESTAMPOID};
	Datum		args[4] = {ids, fences, CStringGetTextDatum("running"), cloacina_utc_now()};
	Beat	   *answers;

	SPI_connect();
	cloacina_execute_tenant(heartbeat_sql, schema, 4, types, args, NULL);
	/* allocated outside SPI's memory, so that it outlives SPI_finish */
	answers = SPI_palloc(sizeof(Beat) * Max(SPI_processed, 1));
	*n_answers = (int) SPI_processed;
	for (int i = 0; i < *n_answers; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		answers[i].id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		answers[i].fence = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		answers[i].answer = strcmp(TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull)), "ok") == 0
			? "ok" : "cancelled";
	}
	SPI_finish();
	qsort(answers, *n_answers, sizeof(Beat), compare_beats);
	return answers;
}

/* The answer for one (id, fence) pair of the input; NULLs are never current. */
static const char *
answer_for(Beat *answers, int n_answers, bool id_null, Datum id, bool fence_null, Datum fence)
{
	Beat		key;
	Beat	   *found;

	if (id_null || fence_null)
		return "lost";
	key.id = DatumGetInt64(id);
	key.fence = DatumGetInt64(fence);
	found = bsearch(&key, answers, n_answers, sizeof(Beat), compare_beats);
	return found ? found->answer : "lost";
}

/* cloacina.heartbeat_batch(task_ids, fences) in "schema" */
static Datum
heartbeat_batch(FunctionCallInfo fcinfo, const char *schema)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *ids,
			   *fences;
	bool	   *id_nulls,
			   *fence_nulls;
	int			n = cloacina_array_elements(fcinfo, 0, INT8OID, &ids, &id_nulls);
	int			n_answers;
	Beat	   *answers;

	if (n != cloacina_array_elements(fcinfo, 1, INT8OID, &fences, &fence_nulls))
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task_ids and fences must have the same length")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n <= 0)
		return (Datum) 0;
	answers = renew(schema, PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), &n_answers);
	for (int i = 0; i < n; i++)
	{
		Datum		row[2];
		bool		row_nulls[2] = {id_nulls[i], false};

		row[0] = ids[i];
		row[1] = CStringGetTextDatum(answer_for(answers, n_answers, id_nulls[i], ids[i],
												fence_nulls[i], fences[i]));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, row_nulls);
	}
	return (Datum) 0;
}

/* cloacina.heartbeat(task_id, fence) in "schema" */
static Datum
heartbeat_one(FunctionCallInfo fcinfo, const char *schema)
{
	int			n_answers;
	Beat	   *answers;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return CStringGetTextDatum("lost");
	answers = renew(schema, cloacina_argument_as_array(fcinfo, 0, INT8OID),
					cloacina_argument_as_array(fcinfo, 1, INT8OID), &n_answers);
	return CStringGetTextDatum(answer_for(answers, n_answers, false, PG_GETARG_DATUM(0),
										  false, PG_GETARG_DATUM(1)));
}

/* cloacina.heartbeat_batch(task_ids, fences): in the caller's current schema */
Datum
cloacina_heartbeat_batch_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, heartbeat_batch);
}

/* cloacina.heartbeat(task_id, fence): in the caller's current schema */
Datum
cloacina_heartbeat_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, heartbeat_one);
}
