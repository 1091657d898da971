"""Stand-ins for the TFLM headers (and the Ethos-U driver's) that a generated main.cc includes, and the syntax
check against them.

No TFLM source tree is available on a fresh machine, so the deploy tests compile main.cc with
`-fsyntax-only` against these declarations: names and signatures copied from tflite-micro's
micro_interpreter.h, micro_context.h, micro_mutable_op_resolver.h and kernels/ethosu.h at commit 90b983c,
and from ethos-u-core-driver's include/ethosu_driver.h.
"""

import subprocess
from pathlib import Path

__all__ = ["STUBS", "syntax_check_against_stubs"]

STUBS = {
    "tensorflow/lite/schema/schema_generated.h": """#pragma once
#include <stdint.h>
#define TFLITE_SCHEMA_VERSION 3
namespace tflite { struct Model { uint32_t version() const; }; const Model* GetModel(const void* buf); }
""",
    "tensorflow/lite/micro/micro_log.h": "#pragma once\nvoid MicroPrintf(const char* format, ...);\n",
    "tensorflow/lite/micro/micro_context.h": """#pragma once
#include <stddef.h>
namespace tflite {
class MicroContext {
 public:
  struct AlternateMemoryRegion { void* address; size_t bytes; };
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/system_setup.h": "#pragma once\nnamespace tflite { void InitializeTarget(); }\n",
    "tensorflow/lite/micro/micro_interpreter.h": """#pragma once
#include <stddef.h>
#include <stdint.h>
#include "tensorflow/lite/schema/schema_generated.h"
#include "tensorflow/lite/micro/micro_context.h"
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef union { int8_t* int8; uint8_t* uint8; float* f; void* raw; } TfLitePtrUnion;
typedef struct { TfLitePtrUnion data; size_t bytes; } TfLiteTensor;
namespace tflite {
class MicroOpResolver {};
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,
                   size_t tensor_arena_size);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t arena_used_bytes() const;
  TfLiteStatus SetDecompressionMemory(const MicroContext::AlternateMemoryRegion* regions, size_t count);
};
}  // namespace tflite
""",
    "tensorflow/lite/micro/kernels/ethosu.h": """#pragma once
#include "tensorflow/lite/micro/micro_interpreter.h"
namespace tflite { struct TFLMRegistration; TFLMRegistration* Register_ETHOSU(); const char* GetString_ETHOSU(); }
""",
    # ethos-u-core-driver's include/ethosu_driver.h: the two calls main.cc makes (signatures as in the driver).
    "ethosu_driver.h": """#pragma once
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
struct ethosu_driver { int opaque; };
int ethosu_init(struct ethosu_driver *drv, void *const base_address, const void *fast_memory,
                const size_t fast_memory_size, uint32_t secure_enable, uint32_t privilege_enable);
void ethosu_irq_handler(struct ethosu_driver *drv);
#ifdef __cplusplus
}
#endif
""",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h": """#pragma once
#include "tensorflow/lite/micro/kernels/ethosu.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddAveragePool2D(); TfLiteStatus AddConv2D(); TfLiteStatus AddDepthwiseConv2D();
  TfLiteStatus AddFullyConnected(); TfLiteStatus AddMaxPool2D(); TfLiteStatus AddReshape();
  TfLiteStatus AddSoftmax(); TfLiteStatus AddQuantize(); TfLiteStatus AddDequantize(); TfLiteStatus AddRelu();
  TfLiteStatus AddDecode(); TfLiteStatus AddEthosU(); TfLiteStatus AddL2Normalization();
};
}  // namespace tflite
""",
}


def syntax_check_against_stubs(project: Path, stubs: Path, *, cpu: str = "cortex-m4", defines: tuple[str, ...] = ()):
    """Write the stubs under `stubs` and syntax-check the project's three sources (warnings are errors)."""
    for rel, text in STUBS.items():
        path = stubs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for source in ("main.cc", "test_vector.cc", "model_data.cc"):
        proc = subprocess.run(["arm-none-eabi-g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                               f"-mcpu={cpu}", "-mthumb", *(f"-D{d}" for d in defines), f"-I{stubs}",
                               f"-I{project}", str(project / source)], capture_output=True, text=True)
        assert proc.returncode == 0, source + ": " + proc.stderr
