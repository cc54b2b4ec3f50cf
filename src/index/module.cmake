# src/index/module.cmake - per-file SIMD flags of the distance kernels. The kernels are chosen at
# run time (src/index/distance.c), so the rest of the library stays baseline x86-64.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/distance_avx2.c
    PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/distance_avx512.c
    ${CMAKE_CURRENT_LIST_DIR}/hnsw_search_avx512.c PROPERTIES COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx2;-mfma;-mf16c")
endif()

