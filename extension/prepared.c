/*
 * prepared.c: cloacina._run(sql text, VARIADIC args "any") and cloacina._run_generic (the same
 * with a generic plan), a prepared-statement cache for the engine's tenant statements; the C
 * functions of the tenant path use the cache through cloacina_execute_prepared.
 *
 * The engine's statements name the tenant's tables, so plpgsql can only run them with EXECUTE,
 * which parses and plans them on every call; planning was most of the cost of a completion.
 * _run prepares each distinct statement text once per backend (with the caller's pinned
 * search_path, which the plan keeps for any later re-planning), keeps the plan, and executes it
 * with the given arguments. Results come back as SETOF record, described by the caller's column
 * definition list. The cache is bounded (least recently used plans are freed), so a backend
 * that serves many tenants does not grow without limit.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_run);
PG_FUNCTION_INFO_V1(cloacina_run_generic);

#define MAX_PREPARED 256
#define MAX_ARGS 16

typedef struct PreparedEntry
{
	uint32		hash;			/* key: hash of the key text and argument types ... */
	const char *template;		/* ... confirmed by comparing these: the statement's template
								 * (NULL for a statement given as text) */
	char	   *key;			/* the schema the template was filled with, or the statement */
	int			nargs;
	Oid			argtypes[MAX_ARGS];
	bool		generic;		/* ... and the plan kind */
	SPIPlanPtr	plan;
	uint64		last_used;
	bool		in_use;
} PreparedEntry;

static PreparedEntry cache[MAX_PREPARED];
static uint64 use_counter = 0;

static PreparedEntry *
lookup(const char *template, const char *key, int nargs, const Oid *argtypes, bool generic,
	   uint32 hash)
{
	for (int i = 0; i < MAX_PREPARED; i++)
	{
		PreparedEntry *e = &cache[i];

		if (e->in_use && e->hash == hash && e->template == template && e->nargs == nargs &&
			e->generic == generic && memcmp(e->argtypes, argtypes, sizeof(Oid) * nargs) == 0 &&
			strcmp(e->key, key) == 0)
			return e;
	}
	return NULL;
}

static PreparedEntry *
prepare(const char *template, const char *key, const char *sql, int nargs, Oid *argtypes,
		bool generic, uint32 hash)
{
	PreparedEntry *victim = NULL;
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
										  generic ? CURSOR_OPT_GENERIC_PLAN : 0);

	if (plan == NULL)
		elog(ERROR, "could not prepare statement: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the prepared statement");

	for (int i = 0; i < MAX_PREPARED; i++)
	{
		if (!cache[i].in_use)
		{
			victim = &cache[i];
			break;
		}
		if (victim == NULL || cache[i].last_used < victim->last_used)
			victim = &cache[i];
	}
	if (victim->in_use)
	{
		SPI_freeplan(victim->plan);
		pfree(victim->key);
	}
	victim->hash = hash;
	victim->template = template;
	victim->key = MemoryContextStrdup(TopMemoryContext, key);
	victim->nargs = nargs;
	victim->generic = generic;
	memcpy(victim->argtypes, argtypes, sizeof(Oid) * nargs);
	victim->plan = plan;
	victim->in_use = true;
	return victim;
}

/* Forgets a statement whose execution failed: its plan may refer to something that is gone. */
static void
forget(PreparedEntry *e)
{
	if (e->in_use)
	{
		SPI_freeplan(e->plan);
		pfree(e->key);
		e->in_use = false;
	}
}

/* Executes the statement of "template" filled with "key" (or "key" itself when no template). */
static int
execute(const char *template, const char *key, int nargs, Oid *argtypes, Datum *values,
		const char *nulls, bool generic)
{
	uint32		hash;
	PreparedEntry *volatile entry;
	int			ret;

	Assert(nargs <= MAX_ARGS);
	hash = hash_bytes((const unsigned char *) key, strlen(key)) ^
		hash_bytes((const unsigned char *) argtypes, sizeof(Oid) * nargs);
	entry = lookup(template, key, nargs, argtypes, generic, hash);
	if (entry == NULL)
		entry = prepare(template, key,
						template ? psprintf(template, quote_identifier(key)) : key,
						nargs, argtypes, generic, hash);
	entry->last_used = ++use_counter;

	PG_TRY();
	{
		ret = SPI_execute_plan(entry->plan, values, nulls, false, 0);
	}
	PG_CATCH();
	{
		forget((PreparedEntry *) entry);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return ret;
}

/*
 * Executes "sql" (inside the caller's SPI connection) with a plan prepared once per backend.
 * A generic plan is planned once and reused; otherwise the plan cache decides per call (custom
 * plans for the first executions). Returns the SPI result code.
 */
int
cloacina_execute_prepared(const char *sql, int nargs, Oid *argtypes, Datum *values,
						  const char *nulls, bool generic)
{
	return execute(NULL, sql, nargs, argtypes, values, nulls, generic);
}

/*
 * Executes the tenant statement "template" (a format whose "%1$s" is the quoted schema name)
 * for "schema", with a generic plan prepared once per backend and tenant: the statements of the
 * C tenant path, written so that the generic plan is the right one. The template is known by
 * its address, so a call formats no text once the statement is prepared. Every such statement
 * returns rows (SPI_tuptable, SPI_processed); anything else is an error.
 */
void
cloacina_execute_tenant(const char *template, const char *schema, int nargs, Oid *argtypes,
						Datum *values, const char *nulls)
{
	int			ret = execute(template, schema, nargs, argtypes, values, nulls, true);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "a cloacina tenant statement failed: %s", SPI_result_code_string(ret));
}

/* _run and _run_generic: executes the statement in argument 0 with the other arguments. */
static Datum
run_statement(FunctionCallInfo fcinfo, bool generic)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *sql;
	int			nargs = PG_NARGS() - 1;
	Oid			argtypes[MAX_ARGS];
	Datum		values[MAX_ARGS];
	char		nulls[MAX_ARGS];
	TupleDesc	expected;
	int			ret;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("statement must not be NULL")));
	if (nargs > MAX_ARGS)
		ereport(ERROR, (errcode(ERRCODE_TOO_MANY_ARGUMENTS), errmsg("at most %d arguments", MAX_ARGS)));
	sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (int i = 0; i < nargs; i++)
	{
		argtypes[i] = get_fn_expr_argtype(fcinfo->flinfo, i + 1);
		if (!OidIsValid(argtypes[i]) || argtypes[i] == UNKNOWNOID)
			ereport(ERROR, (errcode(ERRCODE_INDETERMINATE_DATATYPE),
							errmsg("argument %d of cloacina._run has no type", i + 1)));
		values[i] = PG_GETARG_DATUM(i + 1);
		nulls[i] = PG_ARGISNULL(i + 1) ? 'n' : ' ';
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	expected = rsinfo->setDesc;

	SPI_connect();
	ret = cloacina_execute_prepared(sql, nargs, argtypes, values, nulls, generic);
	if (ret < 0)
		elog(ERROR, "could not run statement: %s", SPI_result_code_string(ret));

	if (SPI_tuptable != NULL && SPI_processed > 0)
	{
		TupleDesc	got = SPI_tuptable->tupdesc;
		Datum	   *row = palloc(sizeof(Datum) * Max(expected->natts, 1));
		bool	   *isnull = palloc(sizeof(bool) * Max(expected->natts, 1));

		if (got->natts != expected->natts)
			ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
							errmsg("statement returns %d columns, the caller expects %d", got->natts, expected->natts)));
		for (int c = 0; c < got->natts; c++)
			if (TupleDescAttr(got, c)->atttypid != TupleDescAttr(expected, c)->atttypid)
				ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
								errmsg("column %d of the statement is %s, the caller expects %s", c + 1,
									   format_type_be(TupleDescAttr(got, c)->atttypid),
									   format_type_be(TupleDescAttr(expected, c)->atttypid))));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			heap_deform_tuple(SPI_tuptable->vals[r], got, row, isnull);
			tuplestore_putvalues(rsinfo->setResult, expected, row, isnull);
		}
	}
	SPI_finish();
	return (Datum) 0;
}

Datum
cloacina_run(PG_FUNCTION_ARGS)
{
	return run_statement(fcinfo, false);
}

/* For statements whose best plan does not depend on the argument values: planned once. */
Datum
cloacina_run_generic(PG_FUNCTION_ARGS)
{
	return run_statement(fcinfo, true);
}
