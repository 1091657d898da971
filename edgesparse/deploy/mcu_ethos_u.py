"""The Arm Ethos-U part of the microcontroller bundle: the NPU operator, its driver, and what is not verified here.

Why its own module: a Vela-compiled model.tflite is the same TFLite Micro
project as any other (`mcu.py` writes it), except that one custom operator,
`ethos-u`, hands Vela's command stream to the NPU. This module owns what that
changes: the plain int8 model the test vector runs through instead (TFLM on
this machine has no NPU and no kernel for the op), the main.cc blocks that
check the kernel is linked and initialise the driver, the README section that
names the driver and the TFLM build flags, and the bundle's notes.

The TFLM and driver API used here was read in tflite-micro's git history
(github.com/tensorflow/tflite-micro at 90b983c, 2026-08-20):
`MicroMutableOpResolver::AddEthosU()` (micro_mutable_op_resolver.h: registers
`Register_ETHOSU()` under the custom code `GetString_ETHOSU()`, "ethos-u";
with the stub kernels/ethosu.cc, built without CO_PROCESSOR=ethos_u,
Register_ETHOSU() returns nullptr and AddEthosU() registers nothing),
kernels/ethos_u/ethosu.cc (inputs 1.. of the op become the NPU's base
addresses: the read-only tensor, the arena's scratch, the fast scratch, then
the feature maps), tools/make/ext_libs/ethos_u.inc (CO_PROCESSOR=ethos_u
downloads the Ethos-U core driver and adds -DETHOSU_ARCH=u55 -DETHOSU55 for
ETHOSU_ARCH=u55), and cortex_m_corstone_300/system_setup.cc (the reference
`ethosu_init(&driver, base, fast_memory, fast_memory_size, 1, 1)` call, base
0x48102000, IRQ 56 routed to `ethosu_irq_handler`). The driver's fast-memory
rule (base address 2 is replaced by `ethosu_init`'s fast memory when one is
given, refused when smaller than the fast scratch tensor) is from
ethos-u-core-driver's ethosu_driver.c.

Raises `DeployError` (a Vela-compiled model for a profile without an NPU, or
for a different accelerator; no plain int8 model to run the test vector
through, or one whose inputs and outputs differ from the compiled model's;
an arena plan that does not hold Vela's scratch) and `ModelError` (the plain
int8 model is not the file report.json records, from edgesparse.builddir).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from edgesparse.builddir import ARTIFACT, read_interpreter_model
from edgesparse.deploy.source import BuildInfo, DeployError
from edgesparse.profiles import NpuConfig, Profile
from edgesparse.report.npu import NOT_VERIFIED, npu_view
from edgesparse.tflite.ethos_u import ETHOS_U_OP, EthosUModel, describe_ethos_u, is_ethos_u_model
from edgesparse.tflite.graph import io_quantization, load_graph

__all__ = [
    "ETHOS_U_DRIVER",
    "ETHOS_U_DRIVER_REPO",
    "NPU_ALIGNMENT",
    "NPU_NOT_VERIFIED",
    "REFERENCE_FILE",
    "TFLM_ETHOS_U_READ",
    "EthosUDeploy",
    "bundle_notes",
    "ethos_u_deploy",
    "main_cc_blocks",
    "readme_blocks",
]

ETHOS_U_DRIVER_REPO = "ARM-software/ethos-u-core-driver"
ETHOS_U_DRIVER = (f"Arm's Ethos-U core driver, {ETHOS_U_DRIVER_REPO} "
                  "(gitlab.arm.com/artificial-intelligence/ethos-u/ethos-u-core-driver)")
TFLM_ETHOS_U_READ = "90b983c, 2026-08-20"
NPU_ALIGNMENT = 16   # every NPU base address (model, arena, fast memory) 16-byte aligned, as Vela lays them out
REFERENCE_FILE = "model_int8_reference.tflite"   # the plain int8 model, shipped beside the compiled one
#: The bundle's statement of what was not run: the build's (report.npu.NOT_VERIFIED), and what follows for the test
#: vector.
NPU_NOT_VERIFIED = f"{NOT_VERIFIED}; the expected output comes from that plain int8 model, run in TFLite Micro here"


@dataclass(frozen=True)
class EthosUDeploy:
    """A Vela-compiled build deployed to an Ethos-U profile: the NPU, the file's NPU side, the reference model."""

    npu: NpuConfig
    compiled: EthosUModel          # describe_ethos_u of model.tflite
    reference_name: str            # the plain int8 model in the build directory (build-relative)
    reference_bytes: bytes

    @property
    def arch(self) -> str:
        """TFLM's ETHOSU_ARCH: 'u55' or 'u65'."""
        return self.npu.product.split("-")[1].lower()

    @property
    def fast_memory_bytes(self) -> int:
        """SRAM main.cc hands ethosu_init as fast memory: the separate fast-scratch tensor (Dedicated_Sram), else 0.

        The driver redirects base address 2 to it and refuses one smaller than that tensor.
        """
        return self.compiled.scratch_fast_bytes

    def make_flags(self, core: str) -> str:
        """The tflite-micro make variables that build the ethos-u kernel and the driver for this NPU and core."""
        return (f"TARGET=cortex_m_generic TARGET_ARCH={core} CO_PROCESSOR=ethos_u ETHOSU_ARCH={self.arch} "
                "OPTIMIZED_KERNEL_DIR=cmsis_nn")


def ethos_u_deploy(info: BuildInfo, prof: Profile) -> EthosUDeploy | None:
    """The Ethos-U facts of a Vela-compiled build for `prof`; None for a plain TFLM model.

    A compiled model needs the NPU it was compiled for: refused for a profile
    without one, or whose accelerator differs from the build profile's (the
    command stream is specific to the MAC configuration).
    """
    graph = load_graph(info.model_bytes)
    if not is_ethos_u_model(graph):
        return None
    if prof.npu is None:
        raise DeployError(f"The model is compiled by Vela for an Arm Ethos-U NPU; profile {prof.name} has none",
                          where=str(info.path / ARTIFACT), expected="a profile with runtime tflm+ethos-u",
                          received=f"{prof.name} (runtime {prof.runtime_name})",
                          fix="Pass the Ethos-U profile the build was made for (--profile NAME), or rebuild for "
                              f"{prof.name}")
    built_for = _build_accelerator(info)
    if built_for and built_for != prof.npu.accelerator:
        raise DeployError("The model was compiled for a different Ethos-U configuration", where="--profile",
                          expected=f"a profile with an {built_for} (the build's)",
                          received=f"{prof.name}: {prof.npu.accelerator}",
                          fix=f"Rebuild with --profile {prof.name} (Vela's command stream is specific to the "
                              "accelerator configuration)")
    name, reference = _reference_model(info)
    compiled = describe_ethos_u(graph)
    return EthosUDeploy(npu=prof.npu, compiled=compiled, reference_name=name, reference_bytes=reference)


def _build_accelerator(info: BuildInfo) -> str | None:
    """The accelerator Vela compiled for, as report.json's "npu" section records it (None without one)."""
    view = npu_view(info.report.get("npu"))
    return view["accelerator"] if view is not None else None


def _reference_model(info: BuildInfo) -> tuple[str, bytes]:
    """The plain int8 model the build verified in TFLM (report.json's verification.model_file), I/O checked."""
    name, data = read_interpreter_model(info.path, info.report)
    if name == ARTIFACT or is_ethos_u_model(load_graph(data)):
        raise DeployError("The build keeps no plain int8 model to run the test vector through",
                          where=str(info.path), expected="report.json's verification.model_file naming the int8 "
                          "model Vela compiled (baselines/pruned_int8.tflite)",
                          received=f"{name} (Vela's compilation: TFLM here cannot run its {ETHOS_U_OP} op)",
                          fix="Rebuild with `edgesparse build` for the Ethos-U profile")
    plain, compiled = io_quantization(data), io_quantization(info.model_bytes)
    if plain != compiled:
        raise DeployError("The plain int8 model does not have the compiled model's inputs and outputs",
                          where=str(info.path / name), expected=f"{compiled}", received=f"{plain}",
                          fix="Rebuild with `edgesparse build`; the two files come from different builds")
    return name, data


def bundle_notes(dep: EthosUDeploy | None, prof: Profile, core: str) -> list[str]:
    """What `deploy` prints for an Ethos-U profile: the operator and build flags, and what is not verified."""
    if dep is None:
        return ([f"{prof.name} has an {prof.npu.product}, but model.tflite is not Vela-compiled: every op runs on "
                 f"the CPU (build with --profile {prof.name} to compile it for the NPU)"] if prof.npu else [])
    cpu = ", ".join(dict.fromkeys(dep.compiled.cpu_ops)) or "none"
    return [f"{dep.npu.product}: AddEthosU() registered ({dep.compiled.npu_ops} {ETHOS_U_OP} op(s); CPU ops: {cpu}); "
            f"build TFLM with {dep.make_flags(core)}; the application calls {ETHOS_U_DRIVER_REPO}'s ethosu_init "
            "before the interpreter (README.md)",
            NPU_NOT_VERIFIED + f" ({dep.reference_name}, shipped as {REFERENCE_FILE})"]


def _comment(text: str) -> str:
    return "\n".join("// " + line for line in textwrap.wrap(text, 100, break_on_hyphens=False))


def main_cc_blocks(dep: EthosUDeploy | None, prof: Profile) -> dict[str, str]:
    """main.cc's Ethos-U blocks: the kernel check, the driver set-up and its init call (all empty without an NPU)."""
    if dep is None:
        return {"NPU_INCLUDE": "", "NPU_DRIVER": "", "NPU_CHECK": "", "NPU_INIT": "", "INVOKE_HINT": ""}
    fast = dep.fast_memory_bytes
    fast_decl = (f"// Memory mode {dep.npu.memory_mode}: the NPU's fast scratch ({fast} bytes, Vela's "
                 "arena_cache_size at most) in SRAM; ethosu_init hands it to the driver.\n"
                 f"alignas({NPU_ALIGNMENT}) uint8_t g_npu_fast_memory[{fast}];\n" if fast else "")
    about = (f"{dep.npu.product} ({dep.npu.accelerator}, profile {prof.name}) runs the {ETHOS_U_OP} op's command "
             f"stream through {ETHOS_U_DRIVER}. ethosu_init() must run before the interpreter invokes it. TFLM's "
             "cortex_m_corstone_300 target does that in InitializeTarget(); on other boards build with "
             "-DEDGESPARSE_NPU_BASE_ADDRESS=<the NPU's register base, from the SoC's reference manual> and route "
             "the NPU interrupt to EdgesparseNpuIrqHandler (README.md).")
    return {
        "NPU_INCLUDE": ('#include "tensorflow/lite/micro/kernels/ethosu.h"\n'
                        "#if defined(EDGESPARSE_NPU_BASE_ADDRESS)\n#include <ethosu_driver.h>\n#endif\n"),
        "NPU_DRIVER": (_comment(about) + "\n#if defined(EDGESPARSE_NPU_BASE_ADDRESS)\n"
                       "#ifndef EDGESPARSE_NPU_SECURE\n#define EDGESPARSE_NPU_SECURE 1\n#endif\n"
                       "#ifndef EDGESPARSE_NPU_PRIVILEGED\n#define EDGESPARSE_NPU_PRIVILEGED 1\n#endif\n"
                       "struct ethosu_driver g_npu_driver;\n" + fast_decl +
                       'extern "C" void EdgesparseNpuIrqHandler(void) { ethosu_irq_handler(&g_npu_driver); }\n'
                       "#endif\n\n"),
        "NPU_CHECK": ("  // Built without CO_PROCESSOR=ethos_u, TFLM links a stub whose Register_ETHOSU() is null,\n"
                      "  // and AddEthosU() then registers nothing: say so rather than fail in AllocateTensors.\n"
                      "  if (tflite::Register_ETHOSU() == nullptr) {\n"
                      '    MicroPrintf("this TFLM library has no ethos-u kernel: build it with CO_PROCESSOR=ethos_u '
                      f'ETHOSU_ARCH={dep.arch}");\n'
                      "    return kTfLiteError;\n  }\n"),
        "NPU_INIT": ("#if defined(EDGESPARSE_NPU_BASE_ADDRESS)\n"
                     "  if (ethosu_init(&g_npu_driver, reinterpret_cast<void*>(EDGESPARSE_NPU_BASE_ADDRESS),\n"
                     "                  " + ("g_npu_fast_memory, sizeof(g_npu_fast_memory)" if fast else "nullptr, 0")
                     + ", EDGESPARSE_NPU_SECURE, EDGESPARSE_NPU_PRIVILEGED) != 0) {\n"
                     '    MicroPrintf("ethosu_init failed");\n    return 1;\n  }\n#endif\n'),
        "INVOKE_HINT": " (ethos-u: is the NPU driver initialised and its interrupt enabled?)",
    }


def readme_blocks(dep: EthosUDeploy | None, prof: Profile, core: str, arena: int) -> dict[str, str]:
    """README.md's Ethos-U parts: its section, the reference model's row, and what was (not) run here.

    For a plain model only the empty placeholders; `mcu.py` then says what TFLM ran.
    """
    if dep is None:
        return {"NPU_SECTION": "", "REFERENCE_ROW": "", "NOT_RUN_ON": ""}
    return {
        "NPU_SECTION": _npu_section(dep, prof, core, arena),
        "REFERENCE_ROW": (f"| `{REFERENCE_FILE}` | the plain int8 model Vela compiled (the build's "
                          f"`{dep.reference_name}`): the test vector's expected output comes from it |\n"),
        "RUN_CHECKED": (f"the plain int8 model Vela compiled (`{REFERENCE_FILE}`) runs\nin the TFLM Python "
                        "interpreter with this test vector; `expected.json` and main.cc's expected label come from "
                        "it, not from the NPU. **The NPU run is not verified**: TFLM on this machine cannot run the "
                        f"`{ETHOS_U_OP}` op (it needs the NPU), so neither `model.tflite` nor the arena size was run "
                        "here, and the NPU's scores may differ from TFLM's reference kernels in the last bits."),
        "NOT_RUN_ON": f", nor run on an {dep.npu.product} or its Fixed Virtual Platform",
    }


def _npu_section(dep: EthosUDeploy, prof: Profile, core: str, arena: int) -> str:
    c, npu = dep.compiled, dep.npu
    cpu = (f"the ops left to the CPU: {', '.join(dict.fromkeys(c.cpu_ops))}" if c.cpu_ops
           else "Vela placed every op on the NPU (no CPU ops)")
    fast = (f"  Memory mode {npu.memory_mode}: `g_npu_fast_memory` ({dep.fast_memory_bytes:,} bytes, in SRAM) is "
            "the NPU's fast scratch; `ethosu_init` hands it to the driver, which uses it instead of the arena's "
            "copy.\n" if dep.fast_memory_bytes else "")
    return f"""## Arm {npu.product} NPU ({npu.accelerator})

`model.tflite` is Vela's compilation for the {npu.accelerator} of profile {prof.name} (NPU at {npu.clock_mhz:g} MHz,
memory mode {npu.memory_mode}): {c.npu_ops} `{ETHOS_U_OP}` custom op(s) hold the NPU command stream
({c.command_stream_bytes:,} bytes) and read the encoded weights ({c.weight_bytes:,} bytes) from the model in
flash; {cpu}.

* **Operator.** `main.cc` registers the NPU op with `MicroMutableOpResolver::AddEthosU()` (custom op
  `{ETHOS_U_OP}`, kernel `tensorflow/lite/micro/kernels/ethos_u/ethosu.cc`). A TFLM library built without
  `CO_PROCESSOR=ethos_u` has a stub kernel: `AddEthosU()` registers nothing, and `main` stops with a message.
* **TFLM build flags.** Build the library with the NPU kernel and driver:

      make -f tensorflow/lite/micro/tools/make/Makefile \\
          {dep.make_flags(core)} microlite

  (these flags replace the Cortex-M4F example under "Add it to a build"). `CO_PROCESSOR=ethos_u` defines
  `ETHOS_U`, compiles `kernels/ethos_u/ethosu.cc` instead of the stub, and downloads and compiles the Ethos-U core
  driver (`ETHOSU_ARCH={dep.arch}` adds `-DETHOSU_ARCH={dep.arch} -DETHOSU{dep.arch[1:]}`). TFLM's Corstone-300
  FVP target is `TARGET=cortex_m_corstone_300 TARGET_ARCH=cortex-m55 CO_PROCESSOR=ethos_u` (it sets
  `ETHOSU_ARCH=u55` itself). Compile this project's files with the library's include paths, plus the driver's
  `include/` directory when you define `EDGESPARSE_NPU_BASE_ADDRESS` (below).
* **Driver.** The NPU is driven by {ETHOS_U_DRIVER}. Before the interpreter runs, the application must
  1. call `ethosu_init(&driver, base_address, fast_memory, fast_memory_size, secure_enable, privilege_enable)`
     with the NPU's register base address from the SoC's reference manual (0 on success);
  2. route the NPU's interrupt to `ethosu_irq_handler(&driver)` and enable it in the NVIC (the driver sleeps
     until it fires);
  3. with the data cache on (a Cortex-M55 has one), override the driver's weak `ethosu_flush_dcache` and
     `ethosu_invalidate_dcache` (no-ops by default) so the NPU and the CPU see each other's writes.

  `main.cc` does 1 and defines `EdgesparseNpuIrqHandler` for 2 when built with
  `-DEDGESPARSE_NPU_BASE_ADDRESS=0x...` (`-DEDGESPARSE_NPU_SECURE=0|1`, `-DEDGESPARSE_NPU_PRIVILEGED=0|1`, both 1 by
  default as in TFLM's Corstone-300 set-up); connect that handler to the NPU's IRQ in your vector table or with
  `NVIC_SetVector`. TFLM's `cortex_m_corstone_300` target does all of it in `InitializeTarget()` (base
  `0x48102000`, IRQ 56: `tensorflow/lite/micro/cortex_m_corstone_300/system_setup.cc`): leave the macro undefined
  there.
* **Memory.** Every address the NPU gets must be {NPU_ALIGNMENT}-byte aligned: `g_model` (it reads the command stream
  and weights in place) and `g_tensor_arena` are `alignas({NPU_ALIGNMENT})`. The arena ({arena:,} bytes) holds the
  scratch area Vela planned for the NPU's feature maps, {c.arena_bytes:,} bytes at the offsets of the file's
  offline memory plan, plus TFLM's own structures. {_placement(npu)}
{fast}
"""


def _placement(npu: NpuConfig) -> str:
    """Where the linker script must put the arena and the model for Vela's memory mode (what Vela assumed)."""
    if npu.memory_mode == "Dedicated_Sram":
        return (f"Memory mode Dedicated_Sram: the arena and the model in {npu.axi1} on AXI1, the fast scratch in "
                f"{npu.axi0} on AXI0, with your linker script.")
    where = "the model there too" if npu.axi1 == npu.axi0 else f"the model in {npu.axi1} on AXI1"
    return (f"Memory mode {npu.memory_mode}: the arena in {npu.axi0} the NPU reaches on AXI0 (not a CPU-only TCM), "
            f"{where}, with your linker script.")
