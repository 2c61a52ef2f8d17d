/* Top-k scan of an int8 gallery for one int8 query, fused: no score array, one pass over the codes.
 *
 * score(i) = (float)dot(codes[i], q) * scales[i]; the k best rows are kept in a min-heap whose
 * root is the worst kept row. Rows are visited in increasing index order and a row enters only
 * if it scores strictly above the root, so among equal scores the lower index wins.
 *
 * The dot product: with AVX512-VNNI, vpdpbusd multiplies unsigned by signed bytes, so the codes
 * are flipped to unsigned (c ^ 0x80 = c + 128) and the constant 128 * sum(q) is subtracted after
 * (the trick XNNPACK and oneDNN use for s8 x s8 on x86). Sixteen rows are reduced at a time and
 * their scores compared with the heap's threshold in one vector compare. Elsewhere a plain loop
 * that the compiler vectorises (NEON sdot / AVX2 on -march=native).
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define MCAD_VNNI 1
#endif

typedef struct {
    float score;
    int64_t idx;
} entry;

/* a is worse than b: lower score, or the same score and a higher index */
static inline int worse(entry a, entry b) { return a.score < b.score || (a.score == b.score && a.idx > b.idx); }

static void sift_down(entry *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(h[l], h[m])) m = l;
        if (r < n && worse(h[r], h[m])) m = r;
        if (m == i) return;
        entry t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

typedef struct {
    entry *h;
    int64_t k, n;
    float thr; /* root score once full, -inf before */
} topk;

static inline void push(topk *t, float score, int64_t idx) {
    entry e = {score, idx};
    if (t->n < t->k) {
        int64_t i = t->n++;
        t->h[i] = e;
        while (i > 0) { /* sift up */
            int64_t p = (i - 1) / 2;
            if (!worse(t->h[i], t->h[p])) break;
            entry s = t->h[i]; t->h[i] = t->h[p]; t->h[p] = s;
            i = p;
        }
        if (t->n == t->k) t->thr = t->h[0].score;
    } else if (score > t->thr) {
        t->h[0] = e;
        sift_down(t->h, t->n, 0);
        t->thr = t->h[0].score;
    }
}

static int32_t dot_scalar(const int8_t *c, const int8_t *q, int64_t d) {
    int32_t s = 0;
    for (int64_t j = 0; j < d; j++) s += (int32_t)c[j] * (int32_t)q[j];
    return s;
}

#ifdef MCAD_VNNI
#define MAXCH 16 /* query chunks of 64 bytes held in registers: d <= 1024 */

static inline __m512i row_acc(const int8_t *c, const __m512i *qv, int64_t nch, __mmask64 tail) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i acc = _mm512_setzero_si512();
    int64_t j = 0;
    for (; j + 1 < nch; j++)
        acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(_mm512_loadu_si512(c + 64 * j), flip), qv[j]);
    __m512i last = _mm512_maskz_loadu_epi8(tail, c + 64 * j); /* never reads past the row */
    return _mm512_dpbusd_epi32(acc, _mm512_xor_si512(last, flip), qv[j]); /* padded q is 0 there */
}

/* four 16-lane accumulators -> their four sums */
static inline __m128i reduce4(__m512i a, __m512i b, __m512i c, __m512i d) {
    __m256i a2 = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
    __m256i b2 = _mm256_add_epi32(_mm512_castsi512_si256(b), _mm512_extracti64x4_epi64(b, 1));
    __m256i c2 = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    __m256i d2 = _mm256_add_epi32(_mm512_castsi512_si256(d), _mm512_extracti64x4_epi64(d, 1));
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a2, b2), _mm256_hadd_epi32(c2, d2));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
#endif

/* Scan rows [0, n) of codes [n, d]; report the best min(k, n) rows, best first, with indices offset
 * by row0. Returns that count, or -1 when d is out of the kernel's range. */
int64_t mcad_scan_topk(const int8_t *codes, const float *scales, int64_t n, int64_t d, const int8_t *q, int64_t k,
                       int64_t row0, entry *heap, int64_t *out_idx, float *out_score) {
    topk t = {heap, k, 0, -__builtin_inff()};
    int64_t i = 0;
#ifdef MCAD_VNNI
    if (d > 64 * MAXCH) return -1;
    int64_t nch = (d + 63) / 64;
    __mmask64 tail = (d % 64) ? (((__mmask64)1 << (d % 64)) - 1) : ~(__mmask64)0;
    int8_t qpad[64 * MAXCH];
    memset(qpad, 0, sizeof qpad);
    memcpy(qpad, q, (size_t)d);
    __m512i qv[MAXCH];
    int32_t qsum = 0;
    for (int64_t j = 0; j < nch; j++) qv[j] = _mm512_loadu_si512(qpad + 64 * j);
    for (int64_t j = 0; j < d; j++) qsum += q[j];
    const __m512i corr = _mm512_set1_epi32(128 * qsum);
    for (; i + 16 <= n; i += 16) {
        const int8_t *c = codes + i * d;
        __m128i s[4];
        for (int g = 0; g < 4; g++) {
            const int8_t *cg = c + 4 * g * d;
            s[g] = reduce4(row_acc(cg, qv, nch, tail), row_acc(cg + d, qv, nch, tail),
                           row_acc(cg + 2 * d, qv, nch, tail), row_acc(cg + 3 * d, qv, nch, tail));
        }
        __m512i dots = _mm512_inserti32x4(_mm512_castsi128_si512(s[0]), s[1], 1);
        dots = _mm512_inserti32x4(_mm512_inserti32x4(dots, s[2], 2), s[3], 3);
        __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(dots, corr)), _mm512_loadu_ps(scales + i));
        __mmask16 m = _mm512_cmp_ps_mask(sc, _mm512_set1_ps(t.thr), _CMP_GT_OQ);
        if (t.n < t.k) m = 0xFFFF; /* filling the heap: every row is a candidate */
        if (m) {
            float buf[16];
            _mm512_storeu_ps(buf, sc);
            while (m) {
                int b = __builtin_ctz(m);
                m &= m - 1;
                push(&t, buf[b], row0 + i + b);
            }
        }
    }
#endif
    for (; i < n; i++) push(&t, (float)dot_scalar(codes + i * d, q, d) * scales[i], row0 + i);
    /* pop worst-first into the tail of the output: best first */
    int64_t m = t.n;
    for (int64_t j = m - 1; j >= 0; j--) {
        out_idx[j] = t.h[0].idx;
        out_score[j] = t.h[0].score;
        t.h[0] = t.h[--t.n];
        sift_down(t.h, t.n, 0);
    }
    return m;
}

/* which code path this build takes, for the benchmark's report */
const char *mcad_scan_isa(void) {
#ifdef MCAD_VNNI
    return "avx512-vnni";
#else
    return "portable-c";
#endif
}
