/*
 * start.c: execute and execute_batch, the start of one run per context, set-based: the runs,
 * their creation events and all their tasks in one statement whatever the number of runs. Root
 * tasks start ready with the run's context (or skipped when their condition fails); the others
 * wait for their dependencies. The public functions are C too, reading the caller's schema
 * themselves: an SQL wrapper was parsed and planned on every call (a quarter of the server's
 * time in the latency benchmark).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_execute);
PG_FUNCTION_INFO_V1(cloacina_execute_current);
PG_FUNCTION_INFO_V1(cloacina_execute_batch_current);

static const char *const workflow_sql =
"SELECT version, definition -> 'tasks' FROM %1$s.workflows WHERE name = $1";

static const char *const keyed_run_sql =
"SELECT id FROM %1$s.executions WHERE idempotency_key = $1";

/*
 * $1 workflow, $2 its version, $3 contexts, $4 priority, $5 idempotency key, $6 run_at,
 * $7 run timeout, $8 the workflow's normalised tasks, $9 the schema's run id sequence, $10
 * whether the runs' start is an event (cloacina.history, history.c).
 * Returns the run ids in context order, the skipped roots per run, and whether handler or SQL
 * tasks became ready.
 */
static const char *const start_sql =
"WITH new_runs AS MATERIALIZED ("
"    SELECT nextval($9) AS id, coalesce(u.c, '{}'::jsonb) AS ctx, u.ord"
"      FROM unnest($3::jsonb[]) WITH ORDINALITY AS u(c, ord)),"
" runs AS ("
"    INSERT INTO %1$s.executions (id, workflow, workflow_version, status, input_context, priority,"
"                                 idempotency_key, run_at, task_count, pending_tasks, deadline)"
"    SELECT id, $1, $2, 'running', ctx, $4, $5, $6, jsonb_array_length($8), jsonb_array_length($8),"
"           $6 + $7 FROM new_runs),"
" run_events AS ("
"    INSERT INTO %1$s.execution_events (execution_id, to_status) SELECT id, 'running' FROM new_runs"
"     WHERE $10),"
" new_tasks AS ("
"    INSERT INTO %1$s.tasks (execution_id, workflow, task, position, topo_index, kind, sql,"
"        dependencies, dependents, pending_deps, trigger_rule, condition, max_attempts,"
"        backoff, delay_ms, max_delay_ms, jitter, timeout_ms, priority, status, ready_at,"
"        input, finished_at)"
"    SELECT r.id, $1, t ->> 'id', (t ->> 'position')::int, (t ->> 'topo_index')::int,"
"           t ->> 'kind', t ->> 'sql',"
"           ARRAY(SELECT jsonb_array_elements_text(t -> 'dependencies')),"
"           ARRAY(SELECT jsonb_array_elements_text(t -> 'dependents')),"
"           jsonb_array_length(t -> 'dependencies'), t ->> 'trigger_rule', nullif(t -> 'when', 'null'),"
"           (t #>> '{retry,attempts}')::int, t #>> '{retry,backoff}',"
"           (t #>> '{retry,delay_ms}')::bigint, (t #>> '{retry,max_delay_ms}')::bigint,"
"           (t #>> '{retry,jitter}')::boolean, (t ->> 'timeout_ms')::bigint,"
"           $4 + (t ->> 'priority')::int,"
"           st.status, $6, CASE WHEN st.root THEN r.ctx END,"
"           CASE WHEN st.status = 'skipped' THEN now() END"
"      FROM new_runs r, jsonb_array_elements($8) AS t,"
"           LATERAL (SELECT root,"
"                           CASE WHEN NOT root THEN 'waiting'"
"                                WHEN t -> 'when' = 'null' OR cloacina._condition_holds(t -> 'when', r.ctx) THEN 'ready'"
"                                ELSE 'skipped' END AS status"
"                      FROM (SELECT jsonb_array_length(t -> 'dependencies') = 0 AS root) x) st"
"    RETURNING id, execution_id, task, kind, status, priority)"
" SELECT (SELECT array_agg(id ORDER BY ord) FROM new_runs),"
"        (SELECT array_agg(execution_id ORDER BY execution_id) FROM"
"            (SELECT DISTINCT execution_id FROM new_tasks WHERE status = 'skipped') sk),"
"        h.any_ready, (SELECT coalesce(bool_or(status = 'ready' AND kind = 'sql'), false) FROM new_tasks),"
"        h.neg_priority, h.id"
"   FROM (SELECT count(*) > 0 AS any_ready, min(-priority) AS neg_priority, min(id) AS id FROM new_tasks"
"          WHERE status = 'ready' AND kind = 'handler') h";

/* $1 run id: logs its roots skipped at creation and returns them. */
static const char *const skipped_roots_sql =
"WITH roots AS (SELECT task FROM %1$s.tasks WHERE execution_id = $1 AND status = 'skipped'),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, to_status, detail)"
"    SELECT $1, task, 0, 'skipped', 'condition not met' FROM roots)"
" SELECT array_agg(task) FROM roots";

static Datum
get_column(int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
}

/* Each context must be a JSON object (or NULL: an empty one) within the context limits. */
static void
check_contexts(ArrayType *contexts)
{
	Datum	   *values;
	bool	   *nulls;
	int			n;

	deconstruct_array(contexts, JSONBOID, -1, false, TYPALIGN_INT, &values, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		const char *kind;

		if (nulls[i])
			continue;
		if (JB_ROOT_IS_OBJECT(DatumGetJsonbP(values[i])))
		{
			cloacina_check_context(DatumGetJsonbP(values[i]),
								   n == 1 ? "context" : psprintf("context #%d of the batch", i + 1));
			continue;
		}
		kind = TextDatumGetCString(DirectFunctionCall1(jsonb_typeof, values[i]));
		if (n == 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("context must be a JSON object (got %s)", kind)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("context #%d of the batch must be a JSON object (got %s)", i + 1, kind)));
	}
}

/*
 * Starts the runs: run_args are the start statement's arguments but $3 and $9 (filled here).
 * Inside an SPI connection, the tenant path entered. Returns the run ids (bigint[]).
 */
static Datum
start(const char *schema, ArrayType *contexts, Datum *run_args, Oid *run_types, char *run_nulls,
	  TimestampTz start_at)
{
	Datum		ids;
	Datum		with_skipped_roots;
	bool		any_ready;
	bool		any_sql;
	bool		isnull;

	run_args[2] = PointerGetDatum(contexts);
	run_args[8] = ObjectIdGetDatum(get_relname_relid("executions_id_seq", get_namespace_oid(schema, false)));
	run_args[9] = BoolGetDatum(cloacina_history_keeps_expected());
	cloacina_execute_tenant(start_sql, schema, 10, run_types, run_args, run_nulls);
	ids = get_column(1, &isnull);
	with_skipped_roots = get_column(2, &isnull);
	any_ready = DatumGetBool(get_column(3, &isnull));
	any_sql = DatumGetBool(get_column(4, &isnull));
	if (any_ready)
	{
		/* the ready roots are ready from start_at ($6) */
		ClaimKey	least = {DatumGetInt32(get_column(5, &isnull)), start_at,
		DatumGetInt64(get_column(6, &isnull))};

		cloacina_claim_floor_lower(schema, &least);
	}

	/* Roots skipped by their condition: log them and let the skips propagate. */
	if (DatumGetPointer(with_skipped_roots) != NULL)
	{
		Datum	   *runs;
		int			n_runs;
		Oid			types[1] = {INT8OID};

		deconstruct_array(DatumGetArrayTypeP(with_skipped_roots), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &runs, NULL, &n_runs);
		for (int i = 0; i < n_runs; i++)
		{
			cloacina_execute_tenant(skipped_roots_sql, schema, 1, types, &runs[i], NULL);
			cloacina_propagate_run(schema, runs[i], get_column(1, &isnull));
		}
	}
	if (any_ready && start_at <= GetCurrentTransactionStartTimestamp())
		cloacina_hint_ready(schema);

	/*
	 * a delayed run (hint its workers when it comes due) or SQL tasks for the
	 * worker's pool
	 */
	if (start_at > GetCurrentTransactionStartTimestamp() || any_sql)
		cloacina_due_push(schema, start_at, any_sql);
	if (run_nulls[6] == ' ')
		cloacina_due_push(schema,
						  DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																  TimestampTzGetDatum(start_at), run_args[6])),
						  false);
	return ids;
}

/* The run that used the idempotency key in run_args[4], as a one-element array; 0 if none. */
static Datum
keyed_run(const char *schema, Datum *run_args, Oid *run_types)
{
	Datum		id;
	bool		isnull;

	cloacina_execute_tenant(keyed_run_sql, schema, 1, &run_types[4], &run_args[4], NULL);
	if (SPI_processed == 0)
		return (Datum) 0;
	id = get_column(1, &isnull);
	return PointerGetDatum(construct_array(&id, 1, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * A keyed execute: the run that used the key first, or a new one. The tenant's unique index on
 * the key decides a race: a concurrent execute with the same key waits for the first one's
 * transaction, fails with unique_violation in its subtransaction here, and returns the first
 * one's run. (No advisory lock: its key would be one that other tenants could take too.)
 */
static Datum
start_keyed(const char *schema, ArrayType *contexts, Datum *run_args, Oid *run_types,
			char *run_nulls, TimestampTz start_at)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	Datum		result = keyed_run(schema, run_args, run_types);

	if (result != (Datum) 0)
		return result;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);
	PG_TRY();
	{
		result = start(schema, contexts, run_args, run_types, run_nulls, start_at);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		result = keyed_run(schema, run_args, run_types);
		if (result == (Datum) 0)
			elog(ERROR, "the run that took idempotency key \"%s\" vanished",
				 text_to_cstring(DatumGetTextPP(run_args[4])));
	}
	PG_END_TRY();
	return result;
}

/*
 * Starts one run of "workflow" per context (none for NULL or an empty array) in "schema", the
 * tenant path entered. A batch takes no idempotency key. Returns the run ids in context order;
 * a keyed execute whose key was used before returns that run.
 */
static ArrayType *
start_runs(const char *schema, text *workflow, ArrayType *contexts, Jsonb *options, bool batch)
{
	RunOptions	opts;
	Datum		run_args[10];
	char		run_nulls[10] = {' ', ' ', ' ', ' ', 'n', ' ', 'n', ' ', ' ', ' '};
	Oid			run_types[10] = {TEXTOID, TEXTOID, JSONBARRAYOID, INT4OID, TEXTOID, TIMESTAMPTZOID,
	INTERVALOID, JSONBOID, REGCLASSOID, BOOLOID};
	Datum		result;
	bool		isnull;

	cloacina_parse_run_options(options, &opts);
	if (batch && opts.idempotency_key != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("execute_batch does not take an idempotency_key option"),
				 errhint("One key would make every run of the batch the same run; use execute() per keyed run.")));
	if (contexts != NULL)
		check_contexts(contexts);
	run_args[3] = Int32GetDatum(opts.priority);
	if (opts.idempotency_key != NULL)
	{
		run_args[4] = PointerGetDatum(opts.idempotency_key);
		run_nulls[4] = ' ';
	}
	run_args[5] = TimestampTzGetDatum(opts.run_at);
	if (opts.timeout != NULL)
	{
		run_args[6] = IntervalPGetDatum(opts.timeout);
		run_nulls[6] = ' ';
	}

	SPI_connect();
	/* the workflow */
	run_args[0] = PointerGetDatum(workflow);
	cloacina_execute_tenant(workflow_sql, schema, 1, run_types, run_args, workflow == NULL ? "n" : NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" is not registered in tenant \"%s\"",
						workflow == NULL ? "<NULL>" : text_to_cstring(workflow), schema),
				 errhint("Register it with cloacina.register_workflow().")));
	run_args[1] = get_column(1, &isnull);
	run_args[7] = get_column(2, &isnull);

	if (contexts == NULL || ArrayGetNItems(ARR_NDIM(contexts), ARR_DIMS(contexts)) == 0)
		result = PointerGetDatum(construct_empty_array(INT8OID));
	else
	{
		if (opts.idempotency_key != NULL)
			result = start_keyed(schema, contexts, run_args, run_types, run_nulls, opts.run_at);
		else
			result = start(schema, contexts, run_args, run_types, run_nulls, opts.run_at);
	}
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	return DatumGetArrayTypeP(result);
}

#define ARG_TEXT(n) (PG_ARGISNULL(n) ? NULL : PG_GETARG_TEXT_P(n))
#define ARG_JSONB(n) (PG_ARGISNULL(n) ? NULL : PG_GETARG_JSONB_P(n))

/* One run for the context in argument first + 1 (NULL: an empty one); workflow and options around it. */
static int64
execute_one(FunctionCallInfo fcinfo, const char *schema, int first)
{
	ArrayType  *contexts = DatumGetArrayTypeP(cloacina_argument_as_array(fcinfo, first + 1, JSONBOID));
	ArrayType  *ids = start_runs(schema, ARG_TEXT(first), contexts, ARG_JSONB(first + 2), false);
	int			first_element = 1;
	bool		isnull;

	return DatumGetInt64(array_get_element(PointerGetDatum(ids), 1, &first_element, -1, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE, &isnull));
}

/* cloacina.execute_batch(workflow, contexts, options) in "schema": (ordinal, execution_id) rows */
static Datum
execute_many(FunctionCallInfo fcinfo, const char *schema)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *contexts = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	ArrayType  *ids = start_runs(schema, ARG_TEXT(0), contexts, ARG_JSONB(2), true);
	Datum	   *values;
	int			n;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	deconstruct_array(ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &values, NULL, &n);
	for (int i = 0; i < n; i++)
	{
		Datum		row[2] = {Int32GetDatum(i + 1), values[i]};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	return (Datum) 0;
}

/* cloacina._execute(s, workflow, context, options) */
Datum
cloacina_execute(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);
	int64		id = execute_one(fcinfo, path.schema, 1);

	cloacina_leave_tenant_path(&path);
	PG_RETURN_INT64(id);
}

/* cloacina.execute(workflow, context, options): in the caller's current schema */
Datum
cloacina_execute_current(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, -1);
	int64		id = execute_one(fcinfo, path.schema, 0);

	cloacina_leave_tenant_path(&path);
	PG_RETURN_INT64(id);
}

/* cloacina.execute_batch(workflow, contexts, options): in the caller's current schema */
Datum
cloacina_execute_batch_current(PG_FUNCTION_ARGS)
{
	return cloacina_in_current_tenant(fcinfo, execute_many);
}
