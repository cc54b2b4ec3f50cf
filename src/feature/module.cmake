# feature module: the descriptor kernels (k-means assignment, VLAD, matching) are tight float /
# integer loops that GCC vectorizes well at -O3; OpenBLAS (linked by the core target) provides
# the PCA eigen decomposition (dsyevr) and matrix products.
set_source_files_properties(
  ${CMAKE_CURRENT_LIST_DIR}/kmeans.c
  ${CMAKE_CURRENT_LIST_DIR}/vlad.c
  ${CMAKE_CURRENT_LIST_DIR}/verify.c
  ${CMAKE_CURRENT_LIST_DIR}/pca.c
  PROPERTIES COMPILE_OPTIONS "-O3")
