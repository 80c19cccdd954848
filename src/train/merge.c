/* LoRA merge and export to GGUF (see merge.h). */
#include "train/merge.h"

#include <stddef.h>

#include "model/adapter.h"
#include "model/convert.h"
#include "model/llama.h"

int lm_merge_write(const char *base_path, const char *adapter_path, const char *out_path,
                   lm_dtype out, float scale, double min_kept, lm_merge_report *rep,
                   lm_pool *pool, lm_err *err) {
    if (rep) *rep = (lm_merge_report){1.0, 0};
    int rc = -1;
    lm_model *m = NULL;
    lm_adapter *a = NULL;
    /* the model is loaded to check the adapter against it */
    if (!(m = lm_model_load(base_path, err))) goto done;
    if (adapter_path && (!(a = lm_adapter_load(m, adapter_path, err)) || lm_adapter_to_f32(a, err)))
        goto done;   /* an F16 adapter's values, widened exactly */
    lm_convert_opts o = {.type = out, .embd_type = out, .adapter = a, .adapter_scale = scale,
                         .min_kept = min_kept, .pool = pool};
    rc = lm_convert_write(m->gguf, out_path, &o, rep, err);
done:
    lm_adapter_free(a);
    lm_model_free(m);
    return rc;
}
