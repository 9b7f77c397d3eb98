/*
 * tenant_path.c: what the C functions of the tenant path (claim.c, complete.c) share: the
 * check that a schema is a tenant the caller may use.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "cloacina.h"

/*
 * The tenant schema named by argument "argno", or the standard error for a call made outside
 * a tenant (the same error as cloacina._require_tenant). A schema the caller may not use is
 * refused as PostgreSQL refuses it, before any of its tables is touched.
 */
char *
cloacina_require_tenant(FunctionCallInfo fcinfo, int argno)
{
	char	   *schema = PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
	Oid			namespace_oid = schema ? get_namespace_oid(schema, true) : InvalidOid;

	if (!OidIsValid(namespace_oid) ||
		!OidIsValid(get_relname_relid("tenant_settings", namespace_oid)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_SCHEMA_NAME),
				 errmsg("current schema %s is not a cloacina tenant",
						schema ? quote_identifier(schema) : "(none)"),
				 errhint("Connect as the tenant's role, or run SET search_path = <tenant schema> first.")));
	if (pg_namespace_aclcheck(namespace_oid, GetUserId(), ACL_USAGE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_SCHEMA, schema);
	return schema;
}
