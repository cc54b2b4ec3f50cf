/*
 * cli/learn_cli.c - parsing of head training options shared by `train` and `eval`
 * (--train-opt key=value).
 */
#include "cli/cli.h"
#include "shoplens/learn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sl__cli_head_opt(struct sl_head_train_opts *o, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || !eq[1]) return -1;
    size_t kl = (size_t)(eq - kv);
    const char *v = eq + 1;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*end || errno) return -1;
#define K(s) (kl == sizeof(s) - 1 && memcmp(kv, s, kl) == 0)
#define INT_IN(lo, hi) (d == (double)(long long)d && d >= (lo) && d <= (hi))
    if (K("epochs")) { if (!INT_IN(SL_HEAD_EPOCHS_MIN, SL_HEAD_EPOCHS_MAX)) return -1; o->epochs = (int)d; }
    else if (K("seed")) { if (!INT_IN(0, 9007199254740992.0)) return -1; o->seed = (uint64_t)d; }
    else if (K("rank")) { if (!INT_IN(SL_HEAD_RANK_MIN, SL_HEAD_RANK_MAX)) return -1; o->rank = (int)d; }
    else if (K("batch")) { if (!INT_IN(SL_HEAD_BATCH_MIN, SL_HEAD_BATCH_MAX)) return -1; o->batch = (int)d; }
    else if (K("lambda")) { if (!(d >= SL_HEAD_LAMBDA_MIN && d <= SL_HEAD_LAMBDA_MAX)) return -1; o->lambda = (float)d; }
    else if (K("temperature")) { if (!(d >= SL_HEAD_TEMPERATURE_MIN && d <= SL_HEAD_TEMPERATURE_MAX)) return -1; o->temperature = (float)d; }
    else if (K("category")) { if (!(d >= SL_HEAD_CATEGORY_WEIGHT_MIN && d <= SL_HEAD_CATEGORY_WEIGHT_MAX)) return -1; o->category_weight = (float)d; }
    else if (K("lr")) { if (!(d >= SL_HEAD_LR_MIN && d <= SL_HEAD_LR_MAX)) return -1; o->lr = (float)d; }
    else return -1;
#undef K
#undef INT_IN
    return 0;
}
