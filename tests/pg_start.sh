#!/usr/bin/env bash
# Source this to start a throwaway PostgreSQL cluster on loopback for the multi-worker tests.
# Exports CXR_TEST_POSTGRES_URL; tests marked `postgres` skip when it is unset.
# Needs Debian's postgresql package. Safe to source twice (reuses a running cluster).
_pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "${_pg_bin}" ]; then
    echo "pg_start: PostgreSQL server binaries not found; install Debian's postgresql" >&2
    return 0 2>/dev/null || exit 0
fi
_pg_dir=${CXR_PG_DIR:-/tmp/cxr-test-pg}
_pg_port=${CXR_PG_PORT:-55432}
if ! su postgres -s /bin/sh -c "${_pg_bin}/pg_ctl -D ${_pg_dir} status" >/dev/null 2>&1; then
    rm -rf "${_pg_dir}"
    mkdir -p "${_pg_dir}" && chown postgres "${_pg_dir}"
    su postgres -s /bin/sh -c "${_pg_bin}/initdb -D ${_pg_dir} -A trust -U postgres" >/dev/null
    su postgres -s /bin/sh -c "${_pg_bin}/pg_ctl -D ${_pg_dir} -l ${_pg_dir}/log -w \
        -o '-p ${_pg_port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off' start" >/dev/null
fi
export CXR_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:${_pg_port}/postgres"
echo "pg_start: PostgreSQL at ${CXR_TEST_POSTGRES_URL}"
