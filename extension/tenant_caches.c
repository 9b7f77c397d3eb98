/*
 * tenant_caches.c: keeps the memory of a backend that serves many tenants bounded.
 *
 * A backend keeps a relation-cache entry for every table and index it has opened, and
 * catalog-cache entries for their columns, and never lets them go: a backend that read every
 * tenant's tables (tenant_stats() for an admin, the background worker and the SQL-task workers
 * over a day) held about 115 KiB per tenant, 5 GiB at 50,000 tenants (docs/performance.md).
 * The tenant check (cloacina_require_tenant) reports every tenant it passes here. Once a
 * backend has served cloacina.cached_tenants distinct tenants since its caches were last
 * emptied, the next new tenant empties them, so they hold that many tenants' tables at most.
 * Emptying is what a backend does anyway when it falls behind on invalidation messages: the
 * entries in use are rebuilt, the others dropped, and the engine's prepared plans (prepared.c)
 * are planned again at their next use. The price is the rebuild, about a millisecond per tenant
 * that is served again after its entries went (measured in docs/performance.md).
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/inval.h"

#include "cloacina.h"

/* The schemas (by oid) of the tenants served since the caches were last emptied. */
static HTAB *served = NULL;

static HTAB *
new_served_set(void)
{
	HASHCTL		ctl = {.keysize = sizeof(Oid),.entrysize = sizeof(Oid)};

	return hash_create("cloacina tenants in the caches", 64, &ctl, HASH_ELEM | HASH_BLOBS);
}

/* The tenant in schema "namespace_oid" is about to be served by this backend. */
void
cloacina_tenant_served(Oid namespace_oid)
{
	if (cloacina_cached_tenants <= 0)
		return;
	if (served == NULL)
		served = new_served_set();
	if (hash_search(served, &namespace_oid, HASH_FIND, NULL) != NULL)
		return;
	if (hash_get_num_entries(served) >= cloacina_cached_tenants)
	{
		InvalidateSystemCaches();
		hash_destroy(served);
		served = new_served_set();
	}
	(void) hash_search(served, &namespace_oid, HASH_ENTER, NULL);
}
