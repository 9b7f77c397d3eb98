# cloacina: PGXS build of the extension, plus the entry points that drive the SDK (CMake),
# the tests, the demo and the benchmarks. See README.md for the two commands that matter.

EXTENSION   = cloacina
EXTVERSION  = $(shell grep -E '^default_version' $(EXTENSION).control | sed -E "s/.*'(.*)'.*/\1/")

MODULE_big  = cloacina
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c)))
# update scripts, and the install scripts of released versions (frozen: CREATE EXTENSION ... VERSION)
DATA        = $(wildcard sql/$(EXTENSION)--*--*.sql) $(wildcard sql/released/$(EXTENSION)--*.sql)
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
# The install script's sources, one concern each, in the order they are concatenated.
SQL_SOURCES = $(addprefix sql/src/,head.sql registry.sql helpers.sql tenant_ddl.sql citus.sql admin.sql \
              migrations.sql workflows.sql engine.sql api.sql cron.sql background.sql \
              monitoring.sql)
# Warnings are errors only when asked (CLOACINA_WERROR=ON; CI does), never in a shipped build.
# CI's strict build also insists on compiling the server headers behind hand-declared symbols
# (extension/secret.c).
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
              $(if $(filter ON,$(CLOACINA_WERROR)),-Werror -DCLOACINA_STRICT)

# install runs first (it creates the extension); the other suites run in name order
REGRESS      = install $(filter-out install,$(patsubst regress/sql/%.sql,%,$(sort $(wildcard regress/sql/*.sql))))
# The suites run in the database the background worker serves (scripts/pgcluster: cloacina);
# --use-existing, because a database the workers are connected to cannot be dropped.
TEST_DB      ?= cloacina
REGRESS_OPTS = --inputdir=regress --outputdir=build/regress --use-existing
ISOLATION      = $(patsubst regress/specs/%.spec,%,$(sort $(wildcard regress/specs/*.spec)))
ISOLATION_OPTS = --inputdir=regress --outputdir=build/isolation --use-existing
EXTRA_CLEAN  = build extension/.pg-target

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
# "make check" is ours (below), not PGXS's, which would refuse: PGXS is left out for it alone.
ifneq ($(MAKECMDGOALS),check)
include $(PGXS)
endif

# after the include, which sets them: the suites' database (see TEST_DB above)
CONTRIB_TESTDB   = $(TEST_DB)
ISOLATION_TESTDB = $(TEST_DB)

# The objects are compiled for one PostgreSQL major (scripts/pg-major): the stamp beside them
# names the server they were built for, and a different PG_CONFIG rebuilds them.
PG_TARGET := $(shell $(PG_CONFIG) --version) $(shell $(PG_CONFIG) --includedir-server)
$(shell [ "$$(cat extension/.pg-target 2>/dev/null)" = "$(PG_TARGET)" ] || echo "$(PG_TARGET)" >extension/.pg-target)
$(OBJS) $(OBJS:.o=.bc): extension/.pg-target

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES)
	cat $^ > $@

installcheck: build-dirs
build-dirs:
	@mkdir -p build/regress build/isolation

.PHONY: test demo check-upgrade build-dirs sdk install-sdk bench bench-smoke format format-check sanitize
# The README's two commands: each builds, installs, and (without DATABASE_URL) starts a private
# PostgreSQL cluster of its own.
test:
	scripts/test
# The fast suites (regress, isolation, the SDK's): what every change runs first.
ifeq ($(MAKECMDGOALS),check)
check:
	scripts/test --fast
endif
# One formatter per language (scripts/format): clang-format for C++, pgindent for extension/.
format:
	scripts/format
format-check:
	scripts/format --check
# The SDK's suites under ASan+UBSan, its concurrent ones under TSan (scripts/sanitize).
sanitize:
	scripts/sanitize
demo:
	scripts/demo
# The update from every released version to this one, with work in flight (scripts/check-upgrade).
check-upgrade:
	scripts/check-upgrade

# The C++ SDK (CMake): build it, and install its headers, library, CMake package and pkg-config
# file (PREFIX, default /usr/local).
PREFIX ?= /usr/local
sdk:
	cmake -S . -B build/cpp -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cpp -j2
install-sdk: sdk
	cmake --install build/cpp --prefix $(PREFIX)

# Benchmarks (bench/README.md): the full run writes bench/RESULTS.md and bench/plots/*.png; the
# smoke run (seconds per scenario, part of CI) writes build/bench-smoke/.
bench:
	bench/run
bench-smoke:
	bench/run --smoke
