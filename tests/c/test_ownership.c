/* test_ownership.c — reference counting of core objects and the relationships they hold
 * (a view holds its storage, a storage its owner, an optimizer its model), and the model +
 * optimizer <-> checkpoint mapping of core/gpt_ckpt.c: foreign optimizers refused, files
 * checked against the config before anything is allocated, strict metadata. Run under
 * `make test SANITIZE=1` too: a use after free or a leak there fails the run. */
#include "check.h"
#include "adamw.h"
#include "ckpt.h"
#include "data.h"
#include "gpt.h"
#include "gpt_ckpt.h"
#include "tensor.h"
#include "tmpfiles.h"

#include <unistd.h>

static int owner_releases;
static void count_release(void *owner) { (void)owner; owner_releases++; }

static void test_storage_and_views(void)
{
    kn_tensor t, v, r;
    int64_t s23[2] = {2, 3}, s6[1] = {6};
    CHECK_OK(kn_tensor_new(&t, 2, s23), "new (2,3)");
    kn_storage *s = t.storage;
    CHECK(kn_storage_refs(s) == 1, "a new tensor's storage has one reference");
    for (int i = 0; i < 6; i++) t.data[i] = (float)i;
    CHECK_OK(kn_tensor_narrow(&t, 0, 1, 1, &v), "narrow row 2");
    CHECK(v.storage == s && kn_storage_refs(s) == 2 && v.view, "the view holds the same storage");
    kn_tensor_free(&t);
    int64_t idx[2] = {0, 2};
    CHECK(kn_storage_refs(s) == 1 && *kn_tensor_at(&v, idx) == 5.0f,
          "the view keeps the storage alive after the tensor that made it is freed");
    CHECK_FAILS(kn_tensor_reshape(&v, 1, s6, &r), "has 3 elements, new shape (6) has 6",
                "a failed reshape takes no reference");
    CHECK(kn_storage_refs(s) == 1, "still one reference");
    int64_t s3[1] = {3};
    CHECK_OK(kn_tensor_reshape(&v, 1, s3, &v), "reshape a view into itself");
    CHECK(kn_storage_refs(s) == 1 && v.storage == s, "reshaping into itself keeps exactly one reference");
    kn_tensor_free(&v);   /* the last reference: the memory goes (LSan checks) */

    kn_storage *st;
    CHECK_OK(kn_storage_new(&st, 6), "storage_new");
    CHECK_FAILS(kn_tensor_on(&t, st, 4, 1, s3), "exceed the storage's 6",
                "a view past the end of its storage is refused");
    CHECK_OK(kn_tensor_on(&t, st, 3, 1, s3), "a view of the last 3 elements");
    CHECK(kn_storage_refs(st) == 2, "tensor_on retains the storage");
    kn_storage_release(st);
    CHECK(kn_storage_refs(t.storage) == 1, "the caller's release leaves the view's reference");
    kn_tensor_free(&t);

    float buf[8] = {0};
    owner_releases = 0;
    CHECK_OK(kn_storage_borrow(&st, buf, 8, buf, count_release), "borrow a buffer");
    CHECK_OK(kn_tensor_on(&t, st, 2, 1, s3), "a view of borrowed memory");
    kn_storage_release(st);
    CHECK(owner_releases == 0, "the owner is not released while a view lives");
    kn_tensor_free(&t);
    CHECK(owner_releases == 1, "the owner is released once, with the last view");
    CHECK_FAILS(kn_storage_borrow(&st, NULL, 8, buf, count_release), "NULL output or data",
                "borrowing NULL memory fails");
    CHECK(owner_releases == 2 && st == NULL, "a failed borrow releases the owner it was given");
}

static kn_gpt_config tiny(void)
{
    kn_gpt_config c = {.vocab_size = 32, .block_size = 8, .n_layer = 1, .n_head = 2, .n_embd = 8};
    return c;
}

static kn_gpt *make_model(void)
{
    kn_gpt_config c = tiny();
    kn_gpt *g = NULL;
    if (kn_gpt_new(&g, &c) != KN_OK) { printf("# gpt_new: %s\n", kn_errmsg()); exit(1); }
    kn_rng r;
    kn_rng_seed(&r, 3);
    kn_gpt_init(g, &r);
    return g;
}

static void test_optimizer_holds_model(void)
{
    kn_gpt *g = make_model();
    CHECK(kn_gpt_refs(g) == 1, "a new model has one reference");
    kn_adamw *o;
    CHECK_OK(kn_adamw_new(&o, g), "adamw_new");
    CHECK(kn_gpt_refs(g) == 2 && kn_adamw_model(o) == g, "the optimizer holds its model");
    kn_gpt_free(g);   /* the model's creator lets go */
    /* The optimizer still reaches the model's buffers: under ASan a freed model would fail here. */
    kn_gpt *held = kn_adamw_model(o);
    for (size_t i = 0; i < kn_gpt_num_params(held); i++) kn_gpt_grads(held)[i] = 0.01f;
    float norm = 0;
    kn_adamw_hparams h = kn_adamw_defaults();
    CHECK_OK(kn_adamw_step(o, &h, &norm), "a step after the model's creator released it");
    CHECK(norm > 0 && kn_gpt_refs(held) == 1, "the optimizer's reference is the last one");
    kn_adamw *again = kn_adamw_retain(o);
    CHECK(again == o && kn_adamw_refs(o) == 2, "adamw_retain");
    kn_adamw_free(o);
    CHECK(kn_adamw_refs(o) == 1, "one release leaves the optimizer open");
    kn_adamw_free(o);     /* frees the optimizer, then the model (LSan checks) */
    kn_gpt_free(NULL);
    kn_adamw_free(NULL);
    CHECK(1, "releasing NULL is harmless");
}

static void test_last_forward(void)
{
    kn_gpt *g = make_model();
    int32_t in[8], tg[8];
    for (int i = 0; i < 8; i++) in[i] = i, tg[i] = i + 1;
    int B = -1, T = -1;
    CHECK(!kn_gpt_last_forward(g, &B, &T), "no forward yet");
    float loss;
    CHECK_OK(kn_gpt_forward(g, in, tg, 2, 4, NULL, false, &loss), "forward 2x4");
    CHECK(kn_gpt_last_forward(g, &B, &T) && B == 2 && T == 4, "the core knows the last forward's shape");
    CHECK_OK(kn_gpt_reserve(g, 4, 8), "reserve a larger arena");
    CHECK(!kn_gpt_last_forward(g, &B, &T) && kn_gpt_token_losses(g) == NULL,
          "after reserve the old forward's outputs are gone, and the core says so");
    kn_gpt_free(g);
}

static void test_dataset_refs(void)
{
    const char *path = in_dir("tokens.txt");
    write_file(path, "hello, ownership", 16);
    kn_dataset *d;
    CHECK_OK(kn_dataset_open(&d, path, KN_DATA_BYTES, KN_SPLIT_ALL), "open a dataset");
    kn_dataset *again = kn_dataset_retain(d);
    CHECK(again == d && kn_dataset_refs(d) == 2, "dataset_retain");
    kn_dataset_close(d);
    CHECK(kn_dataset_num_tokens(d) == 16, "one close of two leaves the dataset readable");
    kn_dataset_close(d);
    unlink(path);
}

/* A checkpoint with only metadata: a config asking for a model of billions of floats. */
static void write_metadata_only(const char *path)
{
    kn_ckpt_meta meta[] = {
        {"kiln.format", KN_GPT_CKPT_FORMAT}, {"kiln.config.vocab_size", "16777216"},
        {"kiln.config.block_size", "65536"}, {"kiln.config.n_layer", "8"},
        {"kiln.config.n_head", "8"}, {"kiln.config.n_embd", "4096"}};
    if (kn_ckpt_write(path, NULL, 0, meta, 6) != KN_OK) { printf("# %s\n", kn_errmsg()); exit(2); }
}

static void test_checkpoints(void)
{
    kn_gpt *g = make_model(), *other = make_model();
    kn_adamw *o, *o_other;
    CHECK_OK(kn_adamw_new(&o, g), "optimizer of g");
    CHECK_OK(kn_adamw_new(&o_other, other), "optimizer of another model of the same config");
    const char *path = in_dir("a.safetensors");
    CHECK_FAILS(kn_gpt_save(path, g, o_other, NULL, 0), "the optimizer belongs to another model",
                "saving with another model's optimizer is refused");
    CHECK(access(path, F_OK) != 0, "and nothing is written");
    kn_adamw_set_t(o, 7);
    kn_ckpt_meta user[] = {{"note", "x"}};
    CHECK_OK(kn_gpt_save(path, g, o, user, 1), "save model + optimizer");
    kn_ckpt_meta reserved[] = {{"kiln.step", "1"}};
    CHECK_FAILS(kn_gpt_save(in_dir("r.safetensors"), g, NULL, reserved, 1), "reserved prefix",
                "user metadata may not use the kiln. prefix");

    kn_ckpt *c;
    CHECK_OK(kn_ckpt_open(&c, path), "open it");
    CHECK_FAILS(kn_gpt_load(c, other, o), "the optimizer belongs to another model",
                "loading into a model with another model's optimizer is refused");
    CHECK_OK(kn_gpt_load(c, other, o_other), "load into another model with its own optimizer");
    CHECK(kn_adamw_t(o_other) == 7 &&
          memcmp(kn_gpt_params(other), kn_gpt_params(g), kn_gpt_num_params(g) * sizeof(float)) == 0,
          "parameters and the step count come back");
    kn_gpt *g2;
    CHECK_OK(kn_gpt_from_ckpt(&g2, c, NULL), "a new model from the file");
    CHECK(kn_gpt_get_config(g2)->n_head == 2 && kn_gpt_refs(g2) == 1, "with the recorded config");
    kn_gpt_free(g2);
    kn_ckpt_close(c);

    /* strict step count */
    const char *bad_t = in_dir("t.safetensors");
    kn_adamw_set_t(o, 3);
    CHECK_OK(kn_gpt_save(bad_t, g, o, NULL, 0), "save again");
    CHECK_OK(kn_ckpt_open(&c, bad_t), "open");
    kn_gpt_config cfg = tiny();
    CHECK_OK(kn_gpt_ckpt_check(c, &cfg, true), "a good file passes the check");
    kn_ckpt_close(c);
    /* rewrite it with t = "abc": same tensors, the metadata changed */
    CHECK_OK(kn_ckpt_open(&c, path), "reopen the first file");
    int n = kn_ckpt_num_tensors(c), nm = kn_ckpt_num_meta(c);
    kn_ckpt_tensor *ts = calloc((size_t)n, sizeof *ts);
    kn_ckpt_meta *ms = calloc((size_t)nm, sizeof *ms);
    for (int i = 0; i < n; i++) ts[i] = *kn_ckpt_tensor_at(c, i);
    for (int i = 0; i < nm; i++) {
        ms[i] = *kn_ckpt_meta_at(c, i);
        if (strcmp(ms[i].key, "kiln.adamw.t") == 0) ms[i].value = "abc";
    }
    CHECK_OK(kn_ckpt_write(bad_t, ts, n, ms, nm), "write a file whose step count is 'abc'");
    free(ts);
    free(ms);
    kn_ckpt_close(c);
    CHECK_OK(kn_ckpt_open(&c, bad_t), "open it");
    kn_adamw_set_t(o, 5);
    CHECK_FAILS(kn_gpt_load(c, g, o), "'kiln.adamw.t' = 'abc' is not an integer",
                "a non-integer step count is refused, naming the key");
    CHECK(kn_adamw_t(o) == 5, "and the optimizer is unchanged");
    CHECK_OK(kn_gpt_load(c, g, NULL), "without an optimizer the step count does not matter");
    kn_ckpt_close(c);

    /* a metadata-only file whose config asks for a huge model */
    const char *huge = in_dir("huge.safetensors");
    write_metadata_only(huge);
    CHECK_OK(kn_ckpt_open(&c, huge), "open the metadata-only file");
    g2 = NULL;
    CHECK_FAILS(kn_gpt_from_ckpt(&g2, c, NULL), "huge.safetensors: tensor 'transformer.wte.weight' is missing",
                "refused before allocating the model, naming the file and the tensor");
    CHECK(g2 == NULL, "no model made");
    kn_ckpt_close(c);

    kn_adamw_free(o);
    kn_adamw_free(o_other);
    kn_gpt_free(g);
    kn_gpt_free(other);
    unlink(path);
    unlink(bad_t);
    unlink(huge);
}

int main(void)
{
    tmp_dir_make("ownership");
    test_storage_and_views();
    test_optimizer_holds_model();
    test_last_forward();
    test_dataset_refs();
    test_checkpoints();
    int removed = rmdir(dir);
    CHECK(removed == 0, "the test's temp directory is empty at the end");
    CHECK_DONE();
}
