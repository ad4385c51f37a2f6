/* plan_svg.c - the chart of a simulation run: load against capacity over
 * time, as a standalone SVG 1.1 document (no scripts, no external
 * references), so any browser or rsvg-convert renders it. Sessions on the
 * y axis: the cluster's capacity in sessions of the mean shape (dashed),
 * sessions running, running plus waiting when there is a queue, and along
 * the bottom the share of each interval's arrivals that were rejected.
 * Every text in it is made here from numbers: nothing from the input is
 * written into the document.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "plan_internal.h"

#define W 960
#define H 480
#define ML 70 /* margins: left, right, top, bottom */
#define MR 30
#define MT 50
#define MB 90
#define REJ_BAND 30 /* px of the rejection strip below the axis */

/* A round tick step giving about `n` ticks over `range`. */
static double tick_step(double range, int n) {
    double raw = range / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return p * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

typedef struct frame {
    double tmax, ymax;
} frame;

static double px(const frame *f, double t) { return ML + (W - ML - MR) * t / f->tmax; }
static double py(const frame *f, double y) { return MT + (H - MT - MB) * (1 - y / f->ymax); }

static void polyline(FILE *out, const frame *f, const kf_plan_result *r, int which, const char *style) {
    fprintf(out, "<polyline fill=\"none\" %s points=\"", style);
    for (size_t i = 0; i < r->nsamples; i++) {
        const kf_plan_sample *s = &r->samples[i];
        double y = which == 0 ? s->running : (double)s->running + s->waiting;
        fprintf(out, "%.1f,%.1f ", px(f, s->t), py(f, y));
    }
    fprintf(out, "\"/>\n");
}

int kf_plan_svg(FILE *out, const kf_plan_config *c, const kf_plan_result *r) {
    kf_plan_erlang e;
    kf_plan_erlang_check(c, r->nodes, &e);
    frame f = {.tmax = r->sim_end_s > 0 ? r->sim_end_s : 1, .ymax = (double)e.servers};
    bool queue = c->max_wait_s > 0;
    for (size_t i = 0; i < r->nsamples; i++)
        f.ymax = fmax(f.ymax, (double)r->samples[i].running + r->samples[i].waiting);
    f.ymax = f.ymax > 0 ? f.ymax * 1.1 : 1;
    const double hours = f.tmax / 3600;
    fprintf(out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"24\" font-size=\"16\">kfleet plan: %u nodes, %s, %.2f%% rejected, peak %u "
            "sessions, peak utilisation %.0f%%</text>\n",
            W, H, W, H, W, H, ML, r->nodes, c->policy.mode == KF_PLACE_BINPACK ? "binpack" : "spread",
            100 * r->rejection_rate, r->peak_running, 100 * r->peak_util);
    /* Grid and y ticks. */
    double ys = tick_step(f.ymax, 6);
    for (double y = 0; y <= f.ymax; y += ys)
        fprintf(out,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, W - MR, py(&f, y), py(&f, y), ML - 6, py(&f, y) + 4, y);
    double xs = tick_step(hours, 8);
    for (double h = 0; h <= hours + 1e-9; h += xs)
        fprintf(out,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%gh</text>\n",
                px(&f, h * 3600), px(&f, h * 3600), MT, H - MB, px(&f, h * 3600), H - MB + 16, h);
    fprintf(out,
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>"
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n"
            "<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">sessions</text>\n",
            ML, ML, MT, H - MB, ML, W - MR, H - MB, H - MB, (MT + H - MB) / 2, (MT + H - MB) / 2);
    /* Capacity, then the load on top of it. */
    fprintf(out,
            "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" stroke-width=\"2\" "
            "stroke-dasharray=\"8,5\"/>\n",
            ML, W - MR, py(&f, (double)e.servers), py(&f, (double)e.servers));
    if (queue)
        polyline(out, &f, r, 1, "stroke=\"#e08a00\" stroke-width=\"1.5\"");
    polyline(out, &f, r, 0, "stroke=\"#1f5fbf\" stroke-width=\"2\"");
    /* Rejected share per interval, a strip under the axis. */
    int band_top = H - MB + 24;
    fprintf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" font-size=\"10\">rejected</text>\n", ML - 6,
            band_top + REJ_BAND / 2 + 3);
    for (size_t i = 1; i < r->nsamples; i++) {
        const kf_plan_sample *s = &r->samples[i];
        if (!s->rejected || !s->arrived)
            continue;
        double share = fmin(1, (double)s->rejected / s->arrived);
        double x0 = px(&f, r->samples[i - 1].t), x1 = px(&f, s->t);
        fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#c0392b\"/>\n", x0,
                band_top + REJ_BAND * (1 - share), fmax(x1 - x0, 0.5), REJ_BAND * share);
    }
    /* Legend. */
    int ly = H - 14;
    fprintf(out,
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#555\" stroke-width=\"2\" "
            "stroke-dasharray=\"8,5\"/><text x=\"%d\" y=\"%d\">capacity (%llu sessions of the mean shape)</text>\n"
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>"
            "<text x=\"%d\" y=\"%d\">running</text>\n",
            ML, ML + 30, ly - 4, ly - 4, ML + 36, ly, (unsigned long long)e.servers, ML + 330, ML + 360, ly - 4,
            ly - 4, ML + 366, ly);
    if (queue)
        fprintf(out,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#e08a00\" stroke-width=\"2\"/>"
                "<text x=\"%d\" y=\"%d\">running + waiting</text>\n",
                ML + 440, ML + 470, ly - 4, ly - 4, ML + 476, ly);
    fprintf(out, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"10\" fill=\"#c0392b\"/>"
                 "<text x=\"%d\" y=\"%d\">rejected share of arrivals</text>\n</svg>\n",
            ML + 620, ly - 9, ML + 638, ly);
    return fflush(out) == 0 && !ferror(out) ? 0 : -EIO;
}
