# CNN engine: oneDNN (libdnnl-dev) for convolutions, OpenMP for its threads and ours.
find_package(OpenMP REQUIRED COMPONENTS C)
find_library(SL_DNNL_LIB dnnl REQUIRED)
target_link_libraries(shoplens PUBLIC ${SL_DNNL_LIB} OpenMP::OpenMP_C)
file(GLOB _sl_nn_src ${CMAKE_CURRENT_LIST_DIR}/*.c)
if(NOT SL_SANITIZE)
  set_source_files_properties(${_sl_nn_src} PROPERTIES COMPILE_OPTIONS "-O3;-fno-math-errno")
endif()
# Image preprocessing for sl_nn_embed needs the image module (decode/resize).
file(GLOB _sl_nn_img ${PROJECT_SOURCE_DIR}/src/image/*.c)
if(_sl_nn_img)
  target_compile_definitions(shoplens PUBLIC SL_NN_HAVE_IMAGE=1)
endif()
