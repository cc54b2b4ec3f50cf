# learn module: the training products (mm.c) are plain loops that GCC vectorizes at -O3; the
# AVX2 clone is picked at load time.
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/mm.c PROPERTIES COMPILE_OPTIONS "-O3;-fno-math-errno")
