/*
 * start.c: cloacina._start_runs(s, workflow, contexts, options), the start of one run per
 * context, set-based: the runs, their creation events and all their tasks in one statement
 * whatever the number of runs. Root tasks start ready with the run's context (or skipped when
 * their condition fails); the others wait for their dependencies. Every execute and
 * execute_batch goes through here, so it is C: the plpgsql version spent more time in its own
 * overhead than in the statement.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_start_runs);

static const char *const workflow_sql =
"SELECT version, definition -> 'tasks' FROM %1$s.workflows WHERE name = $1";

static const char *const keyed_run_sql =
"SELECT id FROM %1$s.executions WHERE idempotency_key = $1";

/*
 * $1 workflow, $2 its version, $3 contexts, $4 priority, $5 idempotency key, $6 run_at,
 * $7 run timeout, $8 the workflow's normalised tasks, $9 the schema's run id sequence.
 * Returns the run ids in context order, the skipped roots per run, and whether handler or SQL
 * tasks became ready.
 */
static const char *const start_sql =
"WITH new_runs AS MATERIALIZED ("
"    SELECT nextval($9) AS id, coalesce(u.c, '{}'::jsonb) AS ctx, u.ord"
"      FROM unnest($3::jsonb[]) WITH ORDINALITY AS u(c, ord)),"
" runs AS ("
"    INSERT INTO %1$s.executions (id, workflow, workflow_version, status, input_context, priority,"
"                                 idempotency_key, run_at, pending_tasks, deadline)"
"    SELECT id, $1, $2, 'running', ctx, $4, $5, $6, jsonb_array_length($8), $6 + $7 FROM new_runs),"
" run_events AS ("
"    INSERT INTO %1$s.execution_events (execution_id, to_status) SELECT id, 'running' FROM new_runs),"
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
"    RETURNING execution_id, task, kind, status)"
" SELECT (SELECT array_agg(id ORDER BY ord) FROM new_runs),"
"        (SELECT array_agg(execution_id ORDER BY execution_id) FROM"
"            (SELECT DISTINCT execution_id FROM new_tasks WHERE status = 'skipped') sk),"
"        (SELECT coalesce(bool_or(status = 'ready' AND kind = 'handler'), false) FROM new_tasks),"
"        (SELECT coalesce(bool_or(status = 'ready' AND kind = 'sql'), false) FROM new_tasks)";

/* $1 run id: logs its roots skipped at creation and returns them. */
static const char *const skipped_roots_sql =
"WITH roots AS (SELECT task FROM %1$s.tasks WHERE execution_id = $1 AND status = 'skipped'),"
" logged AS ("
"    INSERT INTO %1$s.execution_events (execution_id, task, attempt, to_status, detail)"
"    SELECT $1, task, 0, 'skipped', 'condition not met' FROM roots)"
" SELECT array_agg(task) FROM roots";

static const char *const options_sql = "SELECT * FROM cloacina._run_options($1)";
static const char *const key_lock_sql = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))";

static Datum
get_column(int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
}

/* Each context must be a JSON object (or NULL: an empty one). */
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

		if (nulls[i] || JB_ROOT_IS_OBJECT(DatumGetJsonbP(values[i])))
			continue;
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

static bool
is_empty_object(Datum options)
{
	Jsonb	   *jb = DatumGetJsonbP(options);

	return JB_ROOT_IS_OBJECT(jb) && JB_ROOT_COUNT(jb) == 0;
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
	cloacina_execute_tenant(start_sql, schema, 9, run_types, run_args, run_nulls);
	ids = get_column(1, &isnull);
	with_skipped_roots = get_column(2, &isnull);
	any_ready = DatumGetBool(get_column(3, &isnull));
	any_sql = DatumGetBool(get_column(4, &isnull));

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
	/* a delayed run (hint its workers when it comes due) or SQL tasks for the worker's pool */
	if (start_at > GetCurrentTransactionStartTimestamp() || any_sql)
		cloacina_due_push(schema, start_at, any_sql);
	if (run_nulls[6] == ' ')
		cloacina_due_push(schema,
						  DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																  TimestampTzGetDatum(start_at), run_args[6])),
						  false);
	return ids;
}

Datum
cloacina_start_runs(PG_FUNCTION_ARGS)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, 0);
	const char *schema = path.schema;
	ArrayType  *contexts = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	Datum		run_args[9];
	char		run_nulls[9] = {' ', ' ', ' ', ' ', 'n', ' ', 'n', ' ', ' '};
	Oid			run_types[9] = {TEXTOID, TEXTOID, JSONBARRAYOID, INT4OID, TEXTOID, TIMESTAMPTZOID,
	INTERVALOID, JSONBOID, REGCLASSOID};
	TimestampTz start_at = GetCurrentTransactionStartTimestamp();
	Datum		result;
	bool		isnull;

	if (contexts != NULL)
		check_contexts(contexts);

	SPI_connect();
	run_args[3] = Int32GetDatum(0);
	run_args[5] = TimestampTzGetDatum(start_at);
	if (PG_ARGISNULL(3) || !is_empty_object(PG_GETARG_DATUM(3)))
	{
		Oid			types[1] = {JSONBOID};
		Datum		args[1] = {PG_GETARG_DATUM(3)};

		if (cloacina_execute_prepared(options_sql, 1, types, args, PG_ARGISNULL(3) ? "n" : NULL, true) != SPI_OK_SELECT)
			elog(ERROR, "cloacina._run_options failed");
		run_args[3] = get_column(1, &isnull);
		run_args[4] = get_column(2, &isnull);
		run_nulls[4] = isnull ? 'n' : ' ';
		run_args[5] = get_column(3, &isnull);
		start_at = DatumGetTimestampTz(run_args[5]);
		run_args[6] = get_column(4, &isnull);
		run_nulls[6] = isnull ? 'n' : ' ';
	}

	/* the workflow */
	run_args[0] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	cloacina_execute_tenant(workflow_sql, schema, 1, run_types, run_args, PG_ARGISNULL(1) ? "n" : NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" is not registered in tenant \"%s\"",
						PG_ARGISNULL(1) ? "<NULL>" : TextDatumGetCString(PG_GETARG_DATUM(1)), schema),
				 errhint("Register it with cloacina.register_workflow().")));
	run_args[1] = get_column(1, &isnull);
	run_args[7] = get_column(2, &isnull);

	if (contexts == NULL || ArrayGetNItems(ARR_NDIM(contexts), ARR_DIMS(contexts)) == 0)
		result = PointerGetDatum(construct_empty_array(INT8OID));
	else
	{
		if (run_nulls[4] == ' ')
		{
			/* Serialise executes of one key; the loser then sees the winner's committed run. */
			Oid			types[2] = {TEXTOID, TEXTOID};
			Datum		args[2] = {CStringGetTextDatum(schema), run_args[4]};

			if (cloacina_execute_prepared(key_lock_sql, 2, types, args, NULL, true) != SPI_OK_SELECT)
				elog(ERROR, "the idempotency key lock failed");
			cloacina_execute_tenant(keyed_run_sql, schema, 1, &run_types[4], &run_args[4], NULL);
		}
		if (run_nulls[4] == ' ' && SPI_processed > 0)
		{
			Datum		id = get_column(1, &isnull);

			result = PointerGetDatum(construct_array(&id, 1, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		}
		else
			result = start(schema, contexts, run_args, run_types, run_nulls, start_at);
	}
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	cloacina_leave_tenant_path(&path);
	PG_RETURN_DATUM(result);
}
