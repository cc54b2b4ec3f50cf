# src/feature/sift/module.cmake - per-file flags of the SIFT sources (src/feature/sift/).
# SIFT kernels (sift_kernels.h) are compiled three times; sift.c picks one at run time after a
# CPU check, so only these two files may contain AVX2/AVX-512 instructions.
set(_sl_feat_dir ${CMAKE_CURRENT_LIST_DIR})
set(_sl_sift_common -O3 -fno-math-errno -fno-trapping-math)
set_source_files_properties(${_sl_feat_dir}/sift_generic.c PROPERTIES
  COMPILE_OPTIONS "${_sl_sift_common}")
# the driver: -O3 so the descriptor sampling runs (sift_sample_run) vectorize; baseline ISA, so
# no FMA contraction: its float results do not depend on the CPU. -fno-math-errno (results
# unchanged: only errno is not set) lets sqrtf inline and RootSIFT's square roots vectorize.
set_source_files_properties(${_sl_feat_dir}/sift.c PROPERTIES COMPILE_OPTIONS "-O3;-fno-math-errno")
# the image front end: -O3 so the 8-bit -> float conversion of a grey image vectorizes
set_source_files_properties(${_sl_feat_dir}/sift_image.c PROPERTIES COMPILE_OPTIONS "-O3")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|i[3-6]86")
  set_source_files_properties(${_sl_feat_dir}/sift_avx2.c PROPERTIES
    COMPILE_OPTIONS "${_sl_sift_common};-mavx2;-mfma;-ffp-contract=fast")
  set_source_files_properties(${_sl_feat_dir}/sift_avx512.c PROPERTIES
    COMPILE_OPTIONS "${_sl_sift_common};-mavx512f;-mavx512vl;-mavx512bw;-mavx512dq;-mfma;-mprefer-vector-width=256;-ffp-contract=fast")
endif()
