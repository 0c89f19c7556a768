// The engine configuration potatura's fitter chose for @@BOARD@@ (fit_report.md; estimated resources).
#ifndef POTATURA_HLSINF_ENGINE_PARAMS_H
#define POTATURA_HLSINF_ENGINE_PARAMS_H
#define ENGINE_CPI @@CPI@@
#define ENGINE_CPO @@CPO@@
#define ENGINE_HO_MAX @@HO_MAX@@
#define ENGINE_WO_MAX @@WO_MAX@@
#define ENGINE_DATA_BITS @@DATA_BITS@@
#define ENGINE_WEIGHT_BITS @@WEIGHT_BITS@@
#define ENGINE_ACC_BITS @@ACC_BITS@@
#define ENGINE_PIXEL_BITS @@PIXEL_BITS@@
#endif
