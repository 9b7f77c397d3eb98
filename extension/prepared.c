/*
 * prepared.c: the prepared-statement cache of the engine's own tenant statements, used by the C
 * functions of the tenant path (cloacina_execute_tenant).
 *
 * The engine's statements name the tenant's tables, so they cannot be planned once for all
 * tenants; planning them on every call was most of the cost of a completion. Each distinct
 * statement is prepared once per backend (under the pinned search_path of the tenant path,
 * which the plan keeps for any later re-planning) and its plan kept. The cache is bounded
 * (least recently used plans are freed), so a backend that serves many tenants does not grow
 * without limit. Only the engine's statements enter it: no SQL function takes a statement text
 * from a caller (a tenant's statements would otherwise fill a shared worker's memory).
 */
#include "postgres.h"

#include "commands/extension.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "cloacina.h"

#define MAX_PREPARED 256
#define MAX_ARGS 16

typedef struct PreparedEntry
{
	uint32		hash;			/* key: hash of the key text and argument
								 * types ... */
	const char *template;		/* ... confirmed by comparing these: the
								 * statement's template */
	char	   *key;			/* the schema the template was filled with */
	int			nargs;
	Oid			argtypes[MAX_ARGS];
	SPIPlanPtr	plan;
	uint64		last_used;
	bool		in_use;
} PreparedEntry;

static PreparedEntry cache[MAX_PREPARED];
static uint64 use_counter = 0;

static PreparedEntry *
lookup(const char *template, const char *key, int nargs, const Oid *argtypes, uint32 hash)
{
	for (int i = 0; i < MAX_PREPARED; i++)
	{
		PreparedEntry *e = &cache[i];

		if (e->in_use && e->hash == hash && e->template == template && e->nargs == nargs &&
			memcmp(e->argtypes, argtypes, sizeof(Oid) * nargs) == 0 &&
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

/*
 * Whether the citus extension exists in this database: the engine's statements then take the
 * shapes Citus can route (docs/citus.md). A catalog lookup: callers ask when they prepare.
 */
bool
cloacina_citus_installed(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/* Executes the statement of "template" filled with "key". */
static int
execute(const char *template, const char *key, int nargs, Oid *argtypes, Datum *values,
		const char *nulls)
{
	uint32		hash;
	PreparedEntry *volatile entry;
	int			ret;

	Assert(nargs <= MAX_ARGS);
	hash = hash_bytes((const unsigned char *) key, strlen(key)) ^
		hash_bytes((const unsigned char *) argtypes, sizeof(Oid) * nargs);
	entry = lookup(template, key, nargs, argtypes, hash);
	if (entry == NULL)
		entry = prepare(template, key,
						psprintf(template, quote_identifier(key)),
						nargs, argtypes, !cloacina_citus_installed(), hash);
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
 * Executes the tenant statement "template" (a format whose "%1$s" is the quoted schema name)
 * for "schema", prepared once per backend and tenant: the statements of the C tenant path,
 * written so that the generic plan is the right one. Where Citus is installed the plans are
 * custom: Citus cannot route a generic plan whose parameters decide the shard ("could not
 * create distributed plan", docs/citus.md rule 5). The template is known by
 * its address, so a call formats no text once the statement is prepared. Rows a statement
 * returns are in SPI_tuptable; a failure is an error.
 */
void
cloacina_execute_tenant(const char *template, const char *schema, int nargs, Oid *argtypes,
						Datum *values, const char *nulls)
{
	int			ret = execute(template, schema, nargs, argtypes, values, nulls);

	if (ret < 0)
		elog(ERROR, "a cloacina tenant statement failed: %s", SPI_result_code_string(ret));
}
