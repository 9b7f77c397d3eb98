/*
 * tenant_path.c: what the C functions of the tenant path (claim.c, complete.c, fail.c,
 * heartbeat.c, wait.c) share: finding and checking the tenant schema (the one tenant check, also
 * behind cloacina._require_tenant and cloacina._due), running the engine's
 * statements under a search path the caller cannot influence, reading array arguments, and
 * ordering task ids.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_require_tenant_fn);

/* The caller's current schema, as pg_catalog.current_schema() names it, or NULL. */
static char *
current_schema_name(void)
{
	List	   *path = fetch_search_path(false);
	char	   *name = path == NIL ? NULL : get_namespace_name(linitial_oid(path));

	list_free(path);
	return name;
}

/*
 * The tenant check of 0.1.0, for the window between installing this library and ALTER
 * EXTENSION UPDATE (its SQL has no cloacina._is_registered): a tenant_settings table owned by
 * a superuser, which only create_tenant makes.
 */
static bool
has_tenant_tables(Oid namespace_oid)
{
	Oid			settings = get_relname_relid("tenant_settings", namespace_oid);
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(settings))
		return false;
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(settings));
	if (!HeapTupleIsValid(tuple))
		return false;
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return superuser_arg(owner);
}

/*
 * Is the schema "schema" (oid namespace_oid) a cloacina tenant? The registry decides (a schema
 * with a tenant's tables is not one until create_tenant or adopt_tenant registered it; a restored
 * dump, say). Tenants may not read the registry, so cloacina._is_registered() (SECURITY DEFINER,
 * one boolean) asks it; the answer is kept per backend by schema oid, which a removed or restored
 * schema never shares with its registered predecessor, so one look per tenant and backend.
 */
#define REGISTERED_CACHE_SIZE 1024
static Oid	registered_cache[REGISTERED_CACHE_SIZE];

static bool
is_tenant_schema(const char *schema, Oid namespace_oid)
{
	Oid			cloacina_namespace;
	Oid			argtypes[1] = {TEXTOID};
	Oid			fn;
	int			slot = namespace_oid % REGISTERED_CACHE_SIZE;

	if (!OidIsValid(namespace_oid))
		return false;
	if (registered_cache[slot] == namespace_oid)
		return true;
	cloacina_namespace = get_namespace_oid("cloacina", true);
	fn = OidIsValid(cloacina_namespace) ?
		LookupFuncName(list_make2(makeString("cloacina"), makeString("_is_registered")), 1, argtypes, true) :
		InvalidOid;
	if (!OidIsValid(fn))
		return has_tenant_tables(namespace_oid);
	if (!DatumGetBool(OidFunctionCall1(fn, CStringGetTextDatum(schema))))
		return false;
	registered_cache[slot] = namespace_oid;
	return true;
}

/*
 * The one tenant check: "schema" must be a tenant (SQLSTATE 3F000 otherwise, with the hint
 * that names the way in) that the caller may use (refused as PostgreSQL refuses it, before any
 * of its tables is touched), and counted for the bound on this backend's caches
 * (tenant_caches.c). Returns the schema's oid.
 */
Oid
cloacina_require_tenant(const char *schema)
{
	Oid			namespace_oid = schema ? get_namespace_oid(schema, true) : InvalidOid;

	if (!is_tenant_schema(schema, namespace_oid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_SCHEMA_NAME),
				 errmsg("current schema %s is not a cloacina tenant",
						schema ? quote_identifier(schema) : "(none)"),
				 errhint("Connect as the tenant's role, or run SET search_path = <tenant schema> first.")));
#if PG_VERSION_NUM >= 160000
	if (object_aclcheck(NamespaceRelationId, namespace_oid, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
#else
	if (pg_namespace_aclcheck(namespace_oid, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
#endif
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_SCHEMA, schema);
	cloacina_tenant_served(namespace_oid);
	return namespace_oid;
}

/* cloacina._require_tenant(schema_name text): the same check for the plpgsql functions */
Datum
cloacina_require_tenant_fn(PG_FUNCTION_ARGS)
{
	(void) cloacina_require_tenant(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * Enters the tenant path for "schema", which cloacina_require_tenant checks.
 *
 * Until cloacina_leave_tenant_path:
 * - the search path is pg_catalog alone, so nothing on the caller's search path can stand in
 *   for what the engine's statements name; the prepared plans are made and reused under it.
 *   Before PostgreSQL 17 an override search path (pg_catalog, no temporary schema); from 17,
 *   which removed override search paths, search_path = 'pg_catalog, pg_temp' at the settings'
 *   nest level: the caller's temporary schema then comes after pg_catalog for relations and
 *   types, and never for functions and operators, so it cannot stand in for anything the
 *   engine's statements name either (they name pg_catalog's objects, and tenant tables with
 *   their schema). See docs/decisions.md for the cost;
 * - sequential scans are off: the engine's statements reach rows by key, and their generic
 *   plans are kept. Planned while a new tenant's tables are small and not yet analysed, a
 *   sequential scan would look cheaper and then stay as the tables grow (measured: the
 *   finalize of a run 0.37 ms instead of 0.06 ms in a new tenant). JIT is off with them: the
 *   cost of a disabled path would otherwise make every statement look worth compiling
 *   (measured: 230 ms per claim).
 * An error unwinds all three with the (sub)transaction.
 */
#if PG_VERSION_NUM < 170000 && !defined(CLOACINA_SEARCH_PATH_GUC)
#define CLOACINA_OVERRIDE_SEARCH_PATH 1
#endif

TenantPath
cloacina_enter_tenant(const char *schema)
{
	TenantPath	path;
#ifdef CLOACINA_OVERRIDE_SEARCH_PATH
	OverrideSearchPath engine_path = {0};

	engine_path.schemas = NIL;
	engine_path.addCatalog = true;
	engine_path.addTemp = false;
#endif

	(void) cloacina_require_tenant(schema);
	path.schema = pstrdup(schema);

#ifdef CLOACINA_OVERRIDE_SEARCH_PATH
	PushOverrideSearchPath(&engine_path);
	path.guc_level = NewGUCNestLevel();
#else
	path.guc_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
#endif
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return path;
}

/*
 * The tenant path of an API function: the tenant schema is argument "argno" (the internal
 * _x(s, ...) functions) or, with argno < 0, the caller's current schema (the public functions).
 */
TenantPath
cloacina_enter_tenant_path(FunctionCallInfo fcinfo, int argno)
{
	const char *schema;

	if (argno >= 0)
		schema = PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
	else
		schema = current_schema_name();
	return cloacina_enter_tenant(schema);
}

void
cloacina_leave_tenant_path(TenantPath *path)
{
	AtEOXact_GUC(true, path->guc_level);
#ifdef CLOACINA_OVERRIDE_SEARCH_PATH
	PopOverrideSearchPath();
#endif
}

/*
 * A public function of the task path: "body" runs in the tenant path of the caller's current
 * schema, with the function's own arguments.
 */
Datum
cloacina_in_current_tenant(FunctionCallInfo fcinfo, TenantBody body)
{
	TenantPath	path = cloacina_enter_tenant_path(fcinfo, -1);
	Datum		result = body(fcinfo, path.schema);

	cloacina_leave_tenant_path(&path);
	return result;
}

/* The elements of argument "argno", a one-dimensional array, or -1 elements for NULL. */
int
cloacina_array_elements(FunctionCallInfo fcinfo, int argno, Oid element_type, Datum **values,
						bool **nulls)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n;

	if (PG_ARGISNULL(argno))
		return -1;
	get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), element_type, typlen, typbyval, typalign,
					  values, nulls, &n);
	return n;
}

/* "value" as a one-element array of "element_type": single tasks go through the batch statements. */
Datum
cloacina_one_element_array(Datum value, bool isnull, Oid element_type)
{
	int			dims[1] = {1};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(&value, &isnull, 1, dims, lbs, element_type,
											  typlen, typbyval, typalign));
}

/* Argument "argno" as a one-element array of "element_type" (a NULL element for NULL). */
Datum
cloacina_argument_as_array(FunctionCallInfo fcinfo, int argno, Oid element_type)
{
	return cloacina_one_element_array(PG_ARGISNULL(argno) ? (Datum) 0 : PG_GETARG_DATUM(argno),
									  PG_ARGISNULL(argno), element_type);
}

/*
 * now() as a timestamp without time zone in UTC, for statements that add a column's interval
 * to it: timestamp + interval is immutable, timestamptz + interval is not, and Citus refuses a
 * non-immutable function of a column in an UPDATE (docs/citus.md, rule 2). The statement turns
 * the sum back with AT TIME ZONE 'UTC'.
 */
Datum
cloacina_utc_now(void)
{
	return TimestampGetDatum(GetCurrentTransactionStartTimestamp());
}

/* qsort and bsearch order of int64 values (task ids) */
int
cloacina_compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * The rows of a batch function's answer (task_id, accepted): one per element of "ids", in
 * their order; "accepted" is sorted. The result set must be initialised (InitMaterializedSRF).
 */
void
cloacina_return_accepted(FunctionCallInfo fcinfo, Datum *ids, bool *id_nulls, int n,
						 int64 *accepted, int n_accepted)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	for (int i = 0; i < n; i++)
	{
		Datum		row[2];
		bool		row_nulls[2] = {id_nulls[i], false};
		int64		id = id_nulls[i] ? 0 : DatumGetInt64(ids[i]);

		row[0] = ids[i];
		row[1] = BoolGetDatum(!id_nulls[i] &&
							  bsearch(&id, accepted, n_accepted, sizeof(int64),
									  cloacina_compare_int64) != NULL);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, row_nulls);
	}
}
