# image module: let GCC vectorize the float loops of the resampler, blur and normalization at -O2
# (the default "very cheap" cost model refuses loops that need a remainder).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/preprocess.c ${CMAKE_CURRENT_LIST_DIR}/augment.c
  PROPERTIES COMPILE_OPTIONS "-fvect-cost-model=dynamic")
# The JPEG fast path (src/image/jpeg.c) calls libjpeg-turbo directly (libjpeg62-turbo-dev, pulled
# in by libvips-dev; listed in deps/debian-core-image.txt).
pkg_check_modules(SL_LIBJPEG REQUIRED IMPORTED_TARGET libjpeg)
target_link_libraries(shoplens PUBLIC PkgConfig::SL_LIBJPEG)
