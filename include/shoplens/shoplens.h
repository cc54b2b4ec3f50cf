/*
 * shoplens/shoplens.h - umbrella header and library version.
 */
#ifndef SHOPLENS_H
#define SHOPLENS_H

#include "shoplens/error.h"
#include "shoplens/image.h"
#include "shoplens/cluster.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library version, "MAJOR.MINOR.PATCH". Static string. */
const char *sl_version(void);

#ifdef __cplusplus
}
#endif
#endif
