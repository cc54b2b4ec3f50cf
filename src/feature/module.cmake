# feature module: the descriptor kernels (k-means assignment, VLAD, matching) are tight float /
# integer loops that GCC vectorizes well at -O3; OpenBLAS (linked by the core target) provides
# the PCA eigen decomposition (dsyevr) and matrix products.
set_source_files_properties(
  ${CMAKE_CURRENT_LIST_DIR}/kmeans.c
  ${CMAKE_CURRENT_LIST_DIR}/vlad.c
  ${CMAKE_CURRENT_LIST_DIR}/verify.c
  ${CMAKE_CURRENT_LIST_DIR}/pca.c
  PROPERTIES COMPILE_OPTIONS "-O3;-fno-math-errno")
# colour: the AVX2 path (color.c) keeps its 8-lane values in registers only at -O3 (at -O2 GCC 12
# leaves the small loops over vectors rolled, through memory: ~1.5x the instructions).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/color.c PROPERTIES COMPILE_OPTIONS "-O3;-fno-math-errno")
# -fno-math-errno above: square roots (VLAD's power normalization, the colour blocks' L1 -> sqrt)
# inline and vectorize; results are the same, only errno is not set.
