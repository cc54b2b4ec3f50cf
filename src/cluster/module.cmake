# cluster module (src/cluster/) and the PostgreSQL store (src/catalog/store_pg.c, pg_*.c): libpq
# for PostgreSQL, libcurl for the router's requests to the search nodes. Both are Debian
# packages listed in deps/debian-core-cluster.txt.
pkg_check_modules(SL_PQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(SL_CLUSTER_CURL REQUIRED IMPORTED_TARGET libcurl)
target_link_libraries(shoplens PUBLIC PkgConfig::SL_PQ PkgConfig::SL_CLUSTER_CURL)
foreach(_t SL_PQ SL_CLUSTER_CURL)
  get_target_property(_inc PkgConfig::${_t} INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    target_include_directories(shoplens SYSTEM PRIVATE ${_inc})
  endif()
endforeach()
