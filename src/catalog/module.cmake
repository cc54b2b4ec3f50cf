# catalog module: image URLs in feeds are fetched with libcurl (src/catalog/fetch.c;
# libcurl4-openssl-dev, listed in deps/debian-core-catalog.txt).
pkg_check_modules(SL_CURL REQUIRED IMPORTED_TARGET libcurl)
target_link_libraries(shoplens PUBLIC PkgConfig::SL_CURL)
get_target_property(_sl_curl_inc PkgConfig::SL_CURL INTERFACE_INCLUDE_DIRECTORIES)
if(_sl_curl_inc)
  target_include_directories(shoplens SYSTEM PRIVATE ${_sl_curl_inc})
endif()
