// The emulated device: one block at a time, one fiber per CUDA thread, on a dedicated host thread.
//
// Scheduling: every ready fiber runs until it reaches a barrier, a warp collective, or its end (the order of the
// fibers in each round is forward, reverse or shuffled: DUO_EMU_ORDER). When none is ready, warps whose 32 lanes all
// wait at the same collective (same operation, same source line) are resolved; failing that, a block barrier that
// every thread reached is released. Anything else (divergent collectives, a barrier some threads skip, a collective
// with exited lanes) is a fault, as are launch-limit violations, misaligned or out-of-allocation cp.async / ldmatrix
// addresses and misaligned __ldg. A fault is sticky, like a device error: every later CUDA call fails with
// cudaErrorLaunchFailure and the message names the kernel and the source line.
//
// Memory: cudaMalloc and dynamic shared memory are filled with 0xFF bytes (NaN as f32, f16 and bf16), so a read of
// anything not written shows up in the results. cp.async copies land at cp.async.wait_group, not at issue.
// Streams are deferred queues that run at a synchronisation point (stream / event sync, cudaFree, pageable copies);
// copies from pinned host memory read it when they run, so a host write to a staging buffer before its copy ran
// is seen, as on a GPU.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime.h"
#include "emu_half.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

extern "C" void emu_fiber_switch(void** save_sp, void* to_sp);

namespace emu {
struct Event {
  bool done = true;
  double ms = 0;
};
struct Op {
  std::function<void()> run;
  Event* marks = nullptr;  // an event record: set done and the time when the op is reached
};
struct Stream {
  std::deque<Op> ops;
};
}  // namespace emu

namespace emu {
namespace {

// ------------------------------------------------------------------------------------------------ settings, faults
enum class Order { Forward, Reverse, Random };
struct Settings {
  Order order = Order::Random;
  uint64_t seed = 1;
  bool stats = false;
  Settings() {
    const char* o = getenv("DUO_EMU_ORDER");
    if (o && !strcmp(o, "forward")) order = Order::Forward;
    if (o && !strcmp(o, "reverse")) order = Order::Reverse;
    if (const char* s = getenv("DUO_EMU_SEED")) seed = strtoull(s, nullptr, 10);
    stats = getenv("DUO_EMU_STATS") != nullptr;
  }
};
const Settings& settings() {
  static Settings s;
  return s;
}

cudaError_t sticky = cudaSuccess;  // set by the first fault; every later call returns it
cudaError_t last_launch = cudaSuccess;
std::string fault_message;
const char* kernel_name = "";  // of the running launch

// ------------------------------------------------------------------------------------------------ fibers
constexpr size_t STACK_BYTES = 256 * 1024;
constexpr size_t GUARD_BYTES = 4096;  // PROT_NONE below each stack: an overflow faults instead of corrupting

enum class State { Ready, AtBarrier, AtWarp, Exited };
using Resolver = void (*)(void* lanes[32], int n);
struct Copy {
  void* dst;
  const void* src;
  int src_bytes;
};
struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable byte
  uint3 tid{0, 0, 0};
  State state = State::Ready;
  int op = 0, line = 0;  // the collective or barrier it waits at
  void* data = nullptr;
  Resolver resolve = nullptr;
  int predicate = 0;                       // __syncthreads_or: in, then the block's OR
  std::vector<std::vector<Copy>> groups;   // cp.async: committed groups, then the open one
};

std::vector<char*> stacks;
std::vector<Fiber> fibers;
int current = -1;
void* scheduler_sp = nullptr;
uint3 cur_block{0, 0, 0};
dim3 cur_block_dim, cur_grid_dim;
const std::function<void()>* cur_body = nullptr;
unsigned char* smem = nullptr;  // dynamic shared memory of the running block
size_t smem_bytes = 0, smem_cap = 0;
std::mt19937_64 rng;
long long n_blocks = 0, n_switches = 0, n_launches = 0;
#ifdef EMU_ASAN
const void* scheduler_stack_bottom = nullptr;
size_t scheduler_stack_size = 0;
#endif

void land(const Copy& c) {
  if (c.src_bytes > 0) memcpy(c.dst, c.src, c.src_bytes);
  memset(static_cast<char*>(c.dst) + c.src_bytes, 0, 16 - c.src_bytes);  // cp.async zero-fills past src-size
}

void fiber_entry() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
  (*cur_body)();
  Fiber& f = fibers[current];
  f.state = State::Exited;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, scheduler_stack_bottom, scheduler_stack_size);
#endif
  emu_fiber_switch(&f.sp, scheduler_sp);
  abort();  // an exited fiber is never resumed
}

void start_fiber(Fiber& f, char* stack) {
  f.stack = stack;
#ifdef EMU_ASAN
  __asan_unpoison_memory_region(stack, STACK_BYTES);  // frames of an earlier block's fiber
#endif
  uint64_t* s = reinterpret_cast<uint64_t*>(stack + STACK_BYTES);  // 16-byte aligned (page aligned mmap)
  *--s = 0;                                            // fake return address of fiber_entry: rsp = 8 mod 16 at entry
  *--s = reinterpret_cast<uint64_t>(&fiber_entry);     // popped by emu_fiber_switch's ret
  for (int i = 0; i < 6; ++i) *--s = 0;                // rbp rbx r12 r13 r14 r15
  *--s = 0x1F80ull | (0x037Full << 32);                // MXCSR and x87 control word: the defaults
  f.sp = s;
  f.state = State::Ready;
  f.groups.assign(1, {});
}

void resume(int i) {
  current = i;
  ++n_switches;
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, fibers[i].stack, STACK_BYTES);
#endif
  emu_fiber_switch(&scheduler_sp, fibers[i].sp);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  current = -1;
}

// Called on a fiber: park it in `state` and return to the scheduler.
void park(State state, int op, int line) {
  Fiber& f = fibers[current];
  f.state = state;
  f.op = op;
  f.line = line;
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, scheduler_stack_bottom, scheduler_stack_size);
#endif
  emu_fiber_switch(&f.sp, scheduler_sp);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Resolve every warp whose lanes all wait at one collective; false when none could be.
bool resolve_warps(int n) {
  bool any = false;
  for (int lo = 0; lo < n; lo += 32) {
    const int lanes = std::min(32, n - lo);
    int waiting = 0, exited = 0;
    for (int l = 0; l < lanes; ++l) {
      waiting += fibers[lo + l].state == State::AtWarp;
      exited += fibers[lo + l].state == State::Exited;
    }
    if (waiting == 0 || waiting + exited < lanes) continue;  // other lanes still at a barrier: wait for them
    const Fiber& f0 = fibers[lo];
    if (lanes < 32) {
      fault("%s: warp collective (line %d) in a partial warp of %d threads", kernel_name, f0.line, lanes);
      return false;
    }
    if (exited > 0) {
      fault("%s: warp %d: full-mask collective at line %d with %d exited lanes", kernel_name, lo / 32, f0.line, exited);
      return false;
    }
    void* data[32];
    for (int l = 0; l < 32; ++l) {
      const Fiber& f = fibers[lo + l];
      if (f.op != f0.op || f.line != f0.line) {
        fault("%s: warp %d diverged: lane 0 at line %d, lane %d at line %d", kernel_name, lo / 32, f0.line, l, f.line);
        return false;
      }
      data[l] = f.data;
    }
    current = lo;  // a resolver's fault message may use the kernel context
    f0.resolve(data, 32);
    current = -1;
    if (sticky) return false;
    for (int l = 0; l < 32; ++l) fibers[lo + l].state = State::Ready;
    any = true;
  }
  return any;
}

// Release the block barrier when every thread reached it; false when it cannot be released.
bool release_barrier(int n) {
  int at = 0, exited = 0, line = -1, any = 0;
  for (const Fiber& f : fibers) {
    if (f.state == State::AtBarrier) {
      if (line >= 0 && f.line != line) {
        fault("%s: __syncthreads at lines %d and %d in one block", kernel_name, line, f.line);
        return false;
      }
      line = f.line;
      ++at;
      any |= f.predicate;
    }
    exited += f.state == State::Exited;
  }
  if (at == 0 || at + exited < n) return false;
  if (exited > 0) {
    fault("%s: __syncthreads (line %d) reached by %d threads while %d exited", kernel_name, line, at, exited);
    return false;
  }
  for (Fiber& f : fibers) {
    f.state = State::Ready;
    f.predicate = any;
  }
  return true;
}

void run_block(const std::function<void()>& body, uint3 block) {
  const int n = static_cast<int>(cur_block_dim.x * cur_block_dim.y * cur_block_dim.z);
  while (stacks.size() < static_cast<size_t>(n)) {
    void* p = mmap(nullptr, STACK_BYTES + GUARD_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      fault("cannot map a fiber stack");
      return;
    }
    mprotect(p, GUARD_BYTES, PROT_NONE);
    stacks.push_back(static_cast<char*>(p) + GUARD_BYTES);
  }
  fibers.assign(n, Fiber());
  for (int i = 0; i < n; ++i) {
    start_fiber(fibers[i], stacks[i]);
    fibers[i].tid = uint3{i % cur_block_dim.x, (i / cur_block_dim.x) % cur_block_dim.y,
                          i / (cur_block_dim.x * cur_block_dim.y)};
  }
  cur_block = block;
  cur_body = &body;
  memset(smem, 0xFF, smem_cap);  // poison: NaN as f32 / f16 / bf16
  ++n_blocks;
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  for (;;) {
    if (settings().order == Order::Reverse) std::reverse(order.begin(), order.end());
    if (settings().order == Order::Random) std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      if (fibers[i].state == State::Ready) resume(i);
      if (sticky) return;
    }
    if (resolve_warps(n)) continue;
    if (sticky) return;
    if (std::all_of(fibers.begin(), fibers.end(), [](const Fiber& f) { return f.state == State::Exited; })) return;
    if (release_barrier(n)) continue;
    if (sticky) return;
    int at_barrier = 0, at_warp = 0;
    for (const Fiber& f : fibers) {
      at_barrier += f.state == State::AtBarrier;
      at_warp += f.state == State::AtWarp;
    }
    fault("%s: deadlock in block (%u,%u,%u): %d threads at __syncthreads, %d in warp collectives", kernel_name,
          block.x, block.y, block.z, at_barrier, at_warp);
    return;
  }
}

// ------------------------------------------------------------------------------------------------ the device thread
// Kernels run on one host thread of their own, never on the caller's stack (a JavaScript runtime calling through
// FFI owns that stack), and one at a time.
class DeviceThread {
 public:
  void run(const std::function<void()>& job) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!started_) {
      std::thread([this]() { loop(); }).detach();  // lives as long as the process
      started_ = true;
    }
    job_ = &job;
    cv_.notify_all();
    cv_.wait(lock, [this]() { return job_ == nullptr; });
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this]() { return job_ != nullptr; });
      (*job_)();
      job_ = nullptr;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  bool started_ = false;
};
DeviceThread& device() {
  static DeviceThread* d = new DeviceThread;  // never destroyed: its thread may outlive static destruction
  return *d;
}

// ------------------------------------------------------------------------------------------------ memory, streams
std::map<const char*, size_t> device_blocks;  // base -> bytes (cudaMalloc / cudaMallocAsync)
std::map<const char*, size_t> pinned_blocks;  // base -> bytes (cudaMallocHost)
std::map<const void*, int> dynamic_smem_limit;
std::vector<Stream*> streams;
size_t device_live = 0;
constexpr size_t DEVICE_BYTES = 80ull << 30;

// The block of `blocks` holding [p, p + n), or nullptr.
const char* find_block(const std::map<const char*, size_t>& blocks, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  auto it = blocks.upper_bound(c);
  if (it == blocks.begin()) return nullptr;
  --it;
  return c >= it->first && c + n <= it->first + it->second ? it->first : nullptr;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Run the queued work of `s`, up to and including the record of `until` (everything when null).
void drain(Stream* s, Event* until = nullptr) {
  if (s->ops.empty()) return;
  const std::function<void()> job = [&]() {
    while (!s->ops.empty()) {
      Op op = std::move(s->ops.front());
      s->ops.pop_front();
      if (op.run && !sticky) op.run();
      if (op.marks) {
        op.marks->done = true;
        op.marks->ms = now_ms();
        if (op.marks == until) return;
      }
    }
  };
  device().run(job);
}
void drain_all() {
  for (Stream* s : streams) drain(s);
}
bool known_stream(cudaStream_t s) { return std::find(streams.begin(), streams.end(), s) != streams.end(); }

// ------------------------------------------------------------------------------------------------ warp collectives
struct ShflData {
  unsigned mask;
  float v;
  int arg;  // lane mask (xor) or source lane
  float out;
};
template <bool XOR>
void resolve_shfl(void* lanes[32], int) {
  ShflData* d[32];
  for (int l = 0; l < 32; ++l) d[l] = static_cast<ShflData*>(lanes[l]);
  for (int l = 0; l < 32; ++l) {
    if (d[l]->mask != 0xffffffffu) {
      fault("%s: shuffle with mask %#x (the kernels use full warps)", kernel_name, d[l]->mask);
    }
    const int src = XOR ? (l ^ d[l]->arg) : (d[l]->arg & 31);
    d[l]->out = src < 32 ? d[src]->v : d[l]->v;
  }
}

struct MmaData {
  float* c;
  const uint32_t* a;
  uint32_t b0, b1;
  bool bf16;
};
float half_bits(uint32_t reg, int i, bool bf16) {
  const uint16_t h = static_cast<uint16_t>(reg >> (16 * i));
  return bf16 ? bf16_to_f32(h) : f16_to_f32(h);
}
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: fragments as in the PTX ISA (lane = 4 * group + tig).
void resolve_mma(void* lanes[32], int) {
  double A[16][16], B[16][8], C[16][8];
  const bool bf16 = static_cast<MmaData*>(lanes[0])->bf16;
  for (int L = 0; L < 32; ++L) {
    const MmaData* m = static_cast<MmaData*>(lanes[L]);
    const int g = L / 4, t = L % 4;
    for (int i = 0; i < 2; ++i) {
      A[g][2 * t + i] = half_bits(m->a[0], i, bf16);
      A[g + 8][2 * t + i] = half_bits(m->a[1], i, bf16);
      A[g][2 * t + 8 + i] = half_bits(m->a[2], i, bf16);
      A[g + 8][2 * t + 8 + i] = half_bits(m->a[3], i, bf16);
      B[2 * t + i][g] = half_bits(m->b0, i, bf16);
      B[2 * t + 8 + i][g] = half_bits(m->b1, i, bf16);
      C[g][2 * t + i] = m->c[i];
      C[g + 8][2 * t + i] = m->c[2 + i];
    }
  }
  for (int L = 0; L < 32; ++L) {
    MmaData* m = static_cast<MmaData*>(lanes[L]);
    const int g = L / 4, t = L % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
      double acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      m->c[e] = static_cast<float>(acc);
    }
  }
}

struct LdmData {
  uint32_t* r;
  const unsigned char* row;
};
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8i..8i+7 give the 16-byte rows of matrix i; register i of
// lane L receives elements (2 (L % 4), L / 4) and (2 (L % 4) + 1, L / 4) of matrix i (the transpose's row L / 4).
void resolve_ldmatrix(void* lanes[32], int) {
  const uint16_t* rows[32];
  for (int L = 0; L < 32; ++L) {
    const unsigned char* p = static_cast<LdmData*>(lanes[L])->row;
    if (p < smem || p + 16 > smem + smem_bytes || (p - smem) % 16) {
      fault("%s: ldmatrix row address of lane %d is %s", kernel_name, L,
            (p < smem || p + 16 > smem + smem_bytes) ? "outside dynamic shared memory" : "not 16-byte aligned");
      return;
    }
    rows[L] = reinterpret_cast<const uint16_t*>(p);
  }
  for (int L = 0; L < 32; ++L) {
    uint32_t* r = static_cast<LdmData*>(lanes[L])->r;
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = rows[8 * i + 2 * (L % 4)][L / 4], hi = rows[8 * i + 2 * (L % 4) + 1][L / 4];
      r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

void collective(int op, int line, void* data, Resolver resolve) {
  Fiber& f = fibers[current];
  f.data = data;
  f.resolve = resolve;
  park(State::AtWarp, op, line);
}

struct Init {
  Init() { rng.seed(settings().seed); }
  ~Init() {
    if (settings().stats) {
      fprintf(stderr, "duo emu: %lld launches, %lld blocks, %lld fiber switches\n", n_launches, n_blocks, n_switches);
    }
  }
} init;

}  // namespace

// ------------------------------------------------------------------------------------------------ device builtins
void fault(const char* fmt, ...) {
  if (sticky) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  sticky = cudaErrorLaunchFailure;
  fault_message = std::string("emulator fault: ") + buf;
  fprintf(stderr, "duo emu: FAULT: %s\n", buf);
  if (getenv("DUO_EMU_ABORT")) abort();
}

const uint3& thread_idx() { return fibers[current].tid; }
const uint3& block_idx() { return cur_block; }
const dim3& block_dim() { return cur_block_dim; }
const dim3& grid_dim() { return cur_grid_dim; }
unsigned char* dynamic_smem() { return smem; }

void check_align(const void* p, size_t align, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % align) {
    fault("%s: %s of misaligned address %p (needs %zu)", kernel_name, what, p, align);
  }
}

void syncthreads(int line) { park(State::AtBarrier, 0, line); }

int syncthreads_or(int predicate, int line) {
  fibers[current].predicate = predicate != 0;
  park(State::AtBarrier, 0, line);
  return fibers[current].predicate;
}

float shfl_xor(unsigned mask, float v, int lane_mask, int line) {
  ShflData d{mask, v, lane_mask, 0.f};
  collective(1, line, &d, resolve_shfl<true>);
  return d.out;
}

float shfl(unsigned mask, float v, int src_lane, int line) {
  ShflData d{mask, v, src_lane, 0.f};
  collective(2, line, &d, resolve_shfl<false>);
  return d.out;
}

void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16, int line) {
  MmaData d{c, a, b0, b1, bf16};
  collective(bf16 ? 4 : 3, line, &d, resolve_mma);
}

void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row, int line) {
  LdmData d{r, static_cast<const unsigned char*>(row)};
  collective(5, line, &d, resolve_ldmatrix);
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes
void cp_async16(void* dst, const void* src, int src_bytes) {
  const unsigned char* d = static_cast<const unsigned char*>(dst);
  if (d < smem || d + 16 > smem + smem_bytes) {
    return fault("%s: cp.async destination outside dynamic shared memory", kernel_name);
  }
  if ((d - smem) % 16) return fault("%s: cp.async destination not 16-byte aligned", kernel_name);
  if (src_bytes < 0 || src_bytes > 16) return fault("%s: cp.async src-size %d (0..16)", kernel_name, src_bytes);
  if (src_bytes > 0) {
    if (reinterpret_cast<uintptr_t>(src) % 16) {
      return fault("%s: cp.async source %p not 16-byte aligned", kernel_name, src);
    }
    if (!find_block(device_blocks, src, src_bytes)) {
      return fault("%s: cp.async source %p (+%d bytes) outside every device allocation", kernel_name, src, src_bytes);
    }
  }
  fibers[current].groups.back().push_back(Copy{dst, src, src_bytes});
}

void cp_async_commit() { fibers[current].groups.emplace_back(); }

// cp.async.wait_group n: the copies of all but the newest n committed groups have landed.
void cp_async_wait(int pending) {
  auto& g = fibers[current].groups;
  while (static_cast<int>(g.size()) - 1 > pending) {
    for (const Copy& c : g.front()) land(c);
    g.erase(g.begin());
  }
}

cudaError_t set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (sticky) return sticky;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;
  dynamic_smem_limit[kernel] = value;
  return cudaSuccess;
}

// An sm_90-like SM: 2048 threads, 32 blocks, 228 KiB of shared memory (1 KiB reserved per block). Registers are not
// modelled (the emulator cannot know them).
int max_active_blocks(const void*, int threads, size_t dynamic_smem) {
  if (threads <= 0) return 0;
  const int by_threads = 2048 / threads;
  const int by_smem = static_cast<int>((228 * 1024) / (dynamic_smem + 1024));
  return std::max(0, std::min({by_threads, by_smem, 32}));
}

cudaError_t launch(const void* kernel, const char* name, dim3 g, dim3 b, size_t dyn, cudaStream_t s,
                   std::function<void()> body) {
  if (sticky) return sticky;
  auto reject = [&](const char* why) {
    fprintf(stderr, "duo emu: launch of %s rejected: %s (grid %u,%u,%u, block %u,%u,%u, %zu bytes of shared memory)\n",
            name, why, g.x, g.y, g.z, b.x, b.y, b.z, dyn);
    last_launch = cudaErrorInvalidConfiguration;
    return last_launch;
  };
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z) return reject("a zero dimension");
  if (g.y > 65535 || g.z > 65535) return reject("grid y or z past 65535");
  if (static_cast<uint64_t>(b.x) * b.y * b.z > 1024) return reject("more than 1024 threads per block");
  const auto lim = dynamic_smem_limit.find(kernel);
  if (dyn > (lim == dynamic_smem_limit.end() ? 48 * 1024u : static_cast<size_t>(lim->second))) {
    return reject("dynamic shared memory past the kernel's limit (cudaFuncSetAttribute)");
  }
  if (!known_stream(s)) return reject("unknown stream");
  ++n_launches;
  const std::string kname = name;
  s->ops.push_back(Op{[=]() {
    kernel_name = kname.c_str();
    cur_grid_dim = g;
    cur_block_dim = b;
    if (dyn + 16 > smem_cap) {
      free(smem);
      smem_cap = dyn + 16;
      if (posix_memalign(reinterpret_cast<void**>(&smem), 128, smem_cap)) abort();
    }
    smem_bytes = dyn;
    for (unsigned z = 0; z < g.z && !sticky; ++z)
      for (unsigned y = 0; y < g.y && !sticky; ++y)
        for (unsigned x = 0; x < g.x && !sticky; ++x) run_block(body, uint3{x, y, z});
    kernel_name = "";
  }});
  return cudaSuccess;
}

}  // namespace emu

// ------------------------------------------------------------------------------------------------ the runtime API
using namespace emu;

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return sticky;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "duo CPU emulation of an sm_90 device");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->totalGlobalMem = DEVICE_BYTES;
  return sticky;
}
cudaError_t cudaSetDevice(int) { return sticky; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new Stream;
  streams.push_back(*s);
  return sticky;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  drain(s);
  return sticky;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new Event;
  return sticky;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  e->done = false;
  s->ops.push_back(Op{nullptr, e});
  return sticky;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  for (Stream* s : streams) {
    for (const Op& op : s->ops) {
      if (op.marks == e) {
        drain(s, e);
        break;
      }
    }
  }
  return sticky;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!a->done || !b->done) return cudaErrorInvalidResourceHandle;
  *ms = static_cast<float>(b->ms - a->ms);
  return sticky;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (sticky) return sticky;
  if (bytes > DEVICE_BYTES - device_live) return cudaErrorMemoryAllocation;
  void* q = nullptr;
  // exactly `bytes` (not rounded up), so that the sanitizer build flags a kernel reading past the end
  if (posix_memalign(&q, 256, bytes ? bytes : 1)) return cudaErrorMemoryAllocation;
  memset(q, 0xFF, bytes);  // cudaMalloc does not clear: poison with NaN bytes
  device_blocks[static_cast<const char*>(q)] = bytes;
  device_live += bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }

namespace {
cudaError_t release(void* p) {
  if (!p) return sticky;
  const auto it = device_blocks.find(static_cast<const char*>(p));
  if (it == device_blocks.end()) {
    fault("cudaFree(%p): not the base of a device allocation", p);
    return cudaErrorInvalidValue;
  }
  device_live -= it->second;
  device_blocks.erase(it);
  free(p);
  return sticky;
}
}  // namespace

cudaError_t cudaFree(void* p) {
  drain_all();  // cudaFree synchronises the device
  return release(p);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  if (sticky) return sticky;
  s->ops.push_back(Op{[p]() { release(p); }, nullptr});  // freed when the stream reaches it
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  void* q = malloc(bytes ? bytes : 1);
  if (!q) return cudaErrorMemoryAllocation;
  memset(q, 0xFF, bytes);
  pinned_blocks[static_cast<const char*>(q)] = bytes;
  *p = q;
  return sticky;
}
cudaError_t cudaFreeHost(void* p) {
  drain_all();
  pinned_blocks.erase(static_cast<const char*>(p));
  free(p);
  return sticky;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  if (sticky) return sticky;
  const void* dev = kind == cudaMemcpyHostToDevice ? dst : src;
  const void* host = kind == cudaMemcpyHostToDevice ? src : dst;
  if (n == 0) return cudaSuccess;
  if (!find_block(device_blocks, dev, n)) {
    fault("cudaMemcpyAsync: device range %p + %zu is outside every allocation", dev, n);
    return sticky;
  }
  if (find_block(pinned_blocks, host, 1)) {
    if (!find_block(pinned_blocks, host, n)) {
      fault("cudaMemcpyAsync: pinned host range %p + %zu overruns its allocation", host, n);
      return sticky;
    }
    s->ops.push_back(Op{[=]() { memcpy(dst, src, n); }, nullptr});  // asynchronous: reads / writes when it runs
  } else {
    drain(s);  // pageable host memory: the copy is complete (after the stream's earlier work) when the call returns
    memcpy(dst, src, n);
  }
  return sticky;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  if (sticky) return sticky;
  if (n > 0 && !find_block(device_blocks, p, n)) {
    fault("cudaMemsetAsync: %p + %zu is outside every allocation", p, n);
    return sticky;
  }
  s->ops.push_back(Op{[=]() { memset(p, v, n); }, nullptr});
  return sticky;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = DEVICE_BYTES;
  *free_bytes = DEVICE_BYTES - device_live;
  return sticky;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = sticky ? sticky : last_launch;
  last_launch = cudaSuccess;
  return e;
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorLaunchFailure && !fault_message.empty() ? fault_message.c_str() : cudaGetErrorName(e);
}
