/*
 * cli/cnn_calib.h - the calibration options of `shoplens cnn` (bf16 / int8): where the sample
 * images come from, the estimator and keep-rule settings, saving and loading a calibration.
 */
#ifndef SL_CLI_CNN_CALIB_H
#define SL_CLI_CNN_CALIB_H

#include "shoplens/nn.h"

typedef struct sl__cli_calib {
    sl_nn_calib_opts o;
    const char *from;        /* --calibrate PATH: a .npy of input tensors or a directory of images */
    const char *load, *save; /* --calib-load / --calib-save FILE */
} sl__cli_calib;

extern const char sl__cli_calib_usage[];

void sl__cli_calib_init(sl__cli_calib *c);
/* Parses the option at argv[i]: the number of arguments it used (1 or 2), 0 when argv[i] is not a
 * calibration option, -1 after printing a usage error. */
int sl__cli_calib_arg(const char *cmd, sl__cli_calib *c, int argc, char **argv, int i);
/* After the model is loaded: --calib-load or --calibrate, then --calib-save. Returns an exit
 * status (SL_EXIT_OK when there was nothing to do). */
int sl__cli_calib_apply(const char *cmd, const sl__cli_calib *c, sl_nn *m);

#endif
