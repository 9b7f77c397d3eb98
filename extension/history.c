/*
 * history.c: rows of a tenant's execution_events (its run history), written by a statement of
 * their own from what the statement changing the state returned. An INSERT fed by a
 * data-modifying CTE of that statement would be simpler, but Citus cannot route it to the
 * tenant's node (docs/citus.md, rule 1): it runs every CTE as a sub-plan.
 *
 * On plain PostgreSQL a batch is one INSERT ... SELECT from the arrays. Where Citus is
 * installed that statement would go through the coordinator and make the commit two-phase, so
 * the rows are multi-row INSERT ... VALUES statements instead (the values are subscripts of the
 * array parameters), which Citus routes to the tenant's node and commits in one phase: chunks
 * of a power of two rows, at most HISTORY_CHUNK (few statements for any batch, few distinct
 * ones in the prepared-statement cache). Each backend decides once; either way is correct.
 *
 * cloacina.history says which state changes are events. "full" (the default): every one.
 * "exceptions": not those of the expected path, which the rows of the run and its tasks hold
 * already (a run started, a task made ready, claimed and completed, a run completed: its
 * status, attempt, worker, started_at, finished_at and output); every retry, failure, skip,
 * takeover, timeout, pause, resume, cancel and forced end stays an event. Superuser-only (or
 * set in postgresql.conf, per database or per tenant role with ALTER ROLE ... SET): it decides
 * how much a tenant writes, and the faults suites read completions from the events.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "cloacina.h"

#define HISTORY_CHUNK 64

/* $1 run ids, $2 tasks, $3 attempts, $4 from, $5 to, $6 details: one event per element. */
static const char *const history_unnest_sql =
"INSERT INTO %1$s.execution_events (execution_id, task, attempt, from_status, to_status, detail)"
" SELECT * FROM unnest($1, $2, $3, $4, $5, $6)";

int			cloacina_history_level = CLOACINA_HISTORY_FULL;

static const struct config_enum_entry history_levels[] = {
	{"full", CLOACINA_HISTORY_FULL, false},
	{"exceptions", CLOACINA_HISTORY_EXCEPTIONS, false},
	{NULL, 0, false}
};

void
cloacina_define_history_level(void)
{
	DefineCustomEnumVariable("cloacina.history",
							 "Which state changes of runs and tasks are written to execution_events.",
							 "full: every one; exceptions: not those of the expected path (a run "
							 "started, a task made ready, claimed, completed, a run completed), "
							 "which the rows of runs and tasks hold.",
							 &cloacina_history_level, CLOACINA_HISTORY_FULL, history_levels,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Whether events of the expected path are written (cloacina.history = full). */
bool
cloacina_history_keeps_expected(void)
{
	return cloacina_history_level == CLOACINA_HISTORY_FULL;
}

/* Whether this backend writes VALUES chunks (Citus is installed): decided at its first write. */
static int	routed_values = -1;

/* The statement for n events (a power of two), made once per backend: row i is ($1[i], ...). */
static const char *
history_sql(int n)
{
	static const char *made[HISTORY_CHUNK + 1];

	Assert(n > 0 && n <= HISTORY_CHUNK && (n & (n - 1)) == 0);
	if (made[n] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfoString(&sql, "INSERT INTO %1$s.execution_events"
							   " (execution_id, task, attempt, from_status, to_status, detail) VALUES ");
		for (int i = 1; i <= n; i++)
			appendStringInfo(&sql, "%s($1[%d], $2[%d], $3[%d], $4[%d], $5[%d], $6[%d])",
							 i > 1 ? ", " : "", i, i, i, i, i, i);
		made[n] = sql.data;
		MemoryContextSwitchTo(old);
	}
	return made[n];
}

static const Oid element_types[HISTORY_COLUMNS] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID};

/* A new, empty batch of events, in CurrentMemoryContext. */
History *
cloacina_history_begin(void)
{
	History    *h = palloc(sizeof(History));

	for (int c = 0; c < HISTORY_COLUMNS; c++)
		h->columns[c] = initArrayResult(element_types[c], CurrentMemoryContext, false);
	h->n = 0;
	return h;
}

/* Adds one event: its run, task, attempt, from and to status and detail (NULL where isnull). */
void
cloacina_history_add(History *h, const NullableDatum event[HISTORY_COLUMNS])
{
	for (int c = 0; c < HISTORY_COLUMNS; c++)
		accumArrayResult(h->columns[c], event[c].value, event[c].isnull, element_types[c],
						 CurrentMemoryContext);
	h->n++;
}

/* Elements [start, start + n) of a column as an array */
static Datum
column_slice(ArrayBuildState *column, int start, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array(column->dvalues + start, column->dnulls + start, 1,
											  dims, lbs, column->element_type, column->typlen,
											  column->typbyval, column->typalign));
}

/* Inside an SPI connection, the tenant path entered: writes the batch's events, in order. */
void
cloacina_history_write(const char *schema, History *h)
{
	Oid			argtypes[HISTORY_COLUMNS] = {INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[HISTORY_COLUMNS];

	if (h->n == 0)
		return;
	if (routed_values < 0)
		routed_values = cloacina_citus_installed();
	if (!routed_values)
	{
		for (int c = 0; c < HISTORY_COLUMNS; c++)
			args[c] = column_slice(h->columns[c], 0, h->n);
		cloacina_execute_tenant(history_unnest_sql, schema, HISTORY_COLUMNS, argtypes, args, NULL);
		return;
	}
	for (int start = 0; start < h->n;)
	{
		int			n = HISTORY_CHUNK;

		while (n > h->n - start)	/* the largest power of two that is left */
			n /= 2;

		for (int c = 0; c < HISTORY_COLUMNS; c++)
			args[c] = column_slice(h->columns[c], start, n);
		cloacina_execute_tenant(history_sql(n), schema, HISTORY_COLUMNS, argtypes, args, NULL);
		start += n;
	}
}
