# image module: let GCC vectorize the float loops of the resampler, blur and normalization at -O2
# (the default "very cheap" cost model refuses loops that need a remainder).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/preprocess.c ${CMAKE_CURRENT_LIST_DIR}/augment.c
  PROPERTIES COMPILE_OPTIONS "-fvect-cost-model=dynamic")
