// The compiled gRPC front end of `serve` (serving/model_servers/compiled_frontend.py starts it).
//
// It owns the gRPC port and knows nothing of protobuf: gRPC C++'s generic async API hands it each
// call's method and request bytes, which it forwards over ONE Unix stream socket to the Python
// process, and it finishes each call with the status and response bytes that come back. The frames
// are serving/model_servers/frontend_protocol.py's (all integers little-endian):
//
//   front end -> Python: u32 length | u64 call_id | u8 method | request bytes
//       control (call_id 0, method 0), once: b"<port>" when listening, b"0 <error>" when not (exit 1).
//   Python -> front end: u32 length | u64 call_id | u8 code | u32 message length | message | response
//       control (call_id 0, code 0, message b"shutdown", payload b"<grace seconds>"): stop taking
//       calls, finish those in flight (Python keeps answering) for at most the grace, exit 0.
//   EOF on the socket, SIGTERM or SIGINT: cancel everything and exit 0.
//
// Threads: one per completion queue (--threads, default 1) accepts calls, reads their requests and
// appends their frames to one shared output buffer; whichever of them finds the buffer non-empty
// and nobody writing when its queue has nothing ready writes it (so a burst of calls is one write);
// one reader thread reads the socket in large chunks and finishes the answered calls itself (gRPC
// C++ lets any thread start an operation); one thread waits for signals; main runs the shutdown.
//
// Usage: grpc_frontend --address=HOST:PORT --backend=/path/to/unix.sock [--max_message_bytes=N]
//                      [--reuseport=0|1] [--threads=N] [--channel_arg=NAME=VALUE ...]

#include <absl/synchronization/mutex.h>
#include <grpc/grpc.h>
#include <grpcpp/alarm.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

// Method numbers on the wire; keep in step with METHODS in frontend_protocol.py.
const char* const kMethods[] = {
    "",  // 0: control
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
};
constexpr int kNumMethods = sizeof(kMethods) / sizeof(kMethods[0]);

constexpr size_t kCallHead = 4 + 8 + 1;            // length, call_id, method
constexpr size_t kAnswerHead = 4 + 8 + 1 + 4;      // length, call_id, code, message length
constexpr size_t kReadChunk = 256 * 1024;          // the reader's buffer (grown for larger frames)
constexpr size_t kKeepCapacity = 4 * 1024 * 1024;  // buffers larger than this are freed once empty
constexpr int kRequestsPerCq = 128;                // RequestCalls kept outstanding per queue

int MethodNumber(const std::string& method) {
  for (int i = 1; i < kNumMethods; ++i) {
    if (method == kMethods[i]) return i;
  }
  return 0;
}

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void AppendCallHead(std::string* out, size_t payload_len, uint64_t call_id, int method) {
  char head[kCallHead];
  PutU32(head, static_cast<uint32_t>(8 + 1 + payload_len));
  PutU64(head + 4, call_id);
  head[12] = static_cast<char>(method);
  out->append(head, kCallHead);
}

// Writes all of [data, data+len) to the blocking socket; false when the peer is gone.
bool WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

struct Options {
  std::string address;
  std::string backend;
  int max_message_bytes = INT_MAX;
  int reuseport = 0;
  int threads = 1;
  std::vector<std::pair<std::string, std::string>> channel_args;
};

bool ParseInt(const std::string& text, long lo, long hi, int* out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long v = strtol(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

[[noreturn]] void Usage(const std::string& problem) {
  fprintf(stderr,
          "grpc_frontend: %s\nusage: grpc_frontend --address=HOST:PORT --backend=/path/to/unix.sock "
          "[--max_message_bytes=N] [--reuseport=0|1] [--threads=N] [--channel_arg=NAME=VALUE ...]\n",
          problem.c_str());
  exit(2);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    size_t eq = arg.find('=');
    if (arg.compare(0, 2, "--") != 0 || eq == std::string::npos) Usage("bad argument: " + arg);
    std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    if (name == "address") {
      o.address = value;
    } else if (name == "backend") {
      o.backend = value;
    } else if (name == "max_message_bytes") {
      // -1: no limit, as gRPC takes it
      if (!ParseInt(value, -1, INT_MAX, &o.max_message_bytes)) Usage("bad --max_message_bytes: " + value);
    } else if (name == "reuseport") {
      if (!ParseInt(value, 0, 1, &o.reuseport)) Usage("bad --reuseport (0 or 1): " + value);
    } else if (name == "threads") {
      if (!ParseInt(value, 1, 256, &o.threads)) Usage("bad --threads (1..256): " + value);
    } else if (name == "channel_arg") {
      size_t e = value.find('=');
      if (e == std::string::npos || e == 0) Usage("bad --channel_arg (NAME=VALUE): " + value);
      o.channel_args.emplace_back(value.substr(0, e), value.substr(e + 1));
    } else {
      Usage("unknown flag: --" + name);
    }
  }
  if (o.address.empty()) Usage("--address is required");
  if (o.backend.empty()) Usage("--backend is required");
  return o;
}

// One call, from RequestCall to its finish. One operation at a time is outstanding on it, so the
// tag is the call itself and `state` says which operation completed.
struct Call {
  enum State { kRequested, kReading, kFinishing };
  explicit Call(int cq_index) : stream(&ctx), cq(cq_index) {}
  grpc::GenericServerContext ctx;
  grpc::GenericServerAsyncReaderWriter stream;
  grpc::ByteBuffer request;
  State state = kRequested;
  int cq;
  int method = 0;
};

// An answer on its way from the reader thread to the call's queue thread.
struct Answer {
  Call* call;
  unsigned code;
  std::string message;        // code != 0
  grpc::ByteBuffer response;  // code == 0
};

// The answers for one completion queue's calls. The reader thread does not start the calls'
// operations itself: an operation started from a thread outside the queue's makes gRPC hand the
// transport's writes to its executor thread (a thread hop per call, ~12% more CPU per call). It
// queues them here and, when the inbox was empty, sets `alarm` to fire at once on that queue, so
// the queue thread finishes them all in one go.
struct Inbox {
  std::mutex mu;
  std::vector<Answer> items;
  bool armed = false;  // the alarm is set and has not been delivered yet
  grpc::Alarm alarm;
};

class Frontend {
 public:
  explicit Frontend(Options options) : o_(std::move(options)) {}

  int Run();
  // Shut down: at once (EOF, a signal, the backend unreachable), or after at most `grace_s`.
  void RequestStop(bool immediate, double grace_s);

 private:
  void ConnectBackend();
  void RequestOne(int cq_index);
  void CqLoop(int cq_index);
  void Forward(Call* call, int method);
  void FlushIfIdle();
  void WriterLoop(std::unique_lock<std::mutex>* lock);
  void ReaderLoop();
  void HandleAnswer(const char* frame, uint32_t length);
  void DeliverInbox(int cq_index);
  void FinishCall(Call* call, grpc::StatusCode code, const std::string& message);
  void DrainUnanswered(const char* why);
  [[noreturn]] void ProtocolError(const char* what);

  Options o_;
  int fd_ = -1;
  grpc::AsyncGenericService service_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::vector<std::unique_ptr<Inbox>> inboxes_;  // one per queue
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> next_call_id_{1};

  // Frames on their way to Python; `writing_`: one thread is writing (it drains `pending_`).
  std::mutex out_mu_;
  std::string pending_;
  std::string writing_buf_;  // the writer's, outside out_mu_
  bool writing_ = false;
  bool backend_gone_ = false;

  // Calls whose frame went to Python (or is about to), by call_id. `closing_`: nobody answers any more.
  std::mutex calls_mu_;
  std::unordered_map<uint64_t, Call*> calls_;
  bool closing_ = false;

  // Operations start under a shared lock; main sets `cqs_down_` and shuts the queues down under the
  // exclusive one, so no operation starts on a queue that is shut down.
  std::shared_mutex ops_mu_;
  bool cqs_down_ = false;

  // What main waits for.
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_requested_ = false;
  bool stop_immediate_ = false;
  double grace_s_ = 0;
  bool shutdown_done_ = false;
};

void Frontend::ConnectBackend() {
  sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (o_.backend.size() >= sizeof(addr.sun_path)) {
    fprintf(stderr, "grpc_frontend: --backend path too long: %s\n", o_.backend.c_str());
    exit(1);
  }
  memcpy(addr.sun_path, o_.backend.data(), o_.backend.size());
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    perror("grpc_frontend: socket");
    exit(1);
  }
  int rc;
  do {
    rc = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    fprintf(stderr, "grpc_frontend: cannot connect to %s: %s\n", o_.backend.c_str(), strerror(errno));
    exit(1);
  }
  int sndbuf = 4 << 20;
  setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
}

void Frontend::RequestOne(int cq_index) {
  Call* call = new Call(cq_index);
  grpc::ServerCompletionQueue* cq = cqs_[cq_index].get();
  service_.RequestCall(&call->ctx, &call->stream, cq, cq, call);
}

void Frontend::CqLoop(int cq_index) {
  grpc::ServerCompletionQueue* cq = cqs_[cq_index].get();
  const gpr_timespec now_deadline = gpr_time_0(GPR_CLOCK_MONOTONIC);
  bool dirty = false;  // appended a frame since the last flush
  while (true) {
    void* tag;
    bool ok;
    if (dirty) {
      // Take whatever else is ready first, so that a burst of calls leaves as one write.
      grpc::CompletionQueue::NextStatus st = cq->AsyncNext(&tag, &ok, now_deadline);
      if (st == grpc::CompletionQueue::SHUTDOWN) break;
      if (st == grpc::CompletionQueue::TIMEOUT) {
        FlushIfIdle();
        dirty = false;
        continue;
      }
    } else if (!cq->Next(&tag, &ok)) {
      break;
    }
    std::shared_lock<std::shared_mutex> guard(ops_mu_);
    if (tag == inboxes_[cq_index].get()) {  // answers from the reader thread
      DeliverInbox(cq_index);
      continue;
    }
    Call* call = static_cast<Call*>(tag);
    if (cqs_down_) {  // draining at exit: no new operations
      delete call;
      continue;
    }
    switch (call->state) {
      case Call::kRequested: {
        if (!ok) {  // the server is shutting down
          delete call;
          break;
        }
        if (accepting_.load(std::memory_order_relaxed)) RequestOne(cq_index);
        int method = MethodNumber(call->ctx.method());
        call->state = Call::kFinishing;
        if (method == 0) {  // as a C++ server answers a method it has not registered
          call->stream.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ""), call);
          break;
        }
        call->state = Call::kReading;
        call->method = method;
        call->stream.Read(&call->request, call);
        break;
      }
      case Call::kReading:
        if (!ok) {  // no request: the client went away, or it was over the size limit
          delete call;
          break;
        }
        Forward(call, call->method);
        dirty = true;
        break;
      case Call::kFinishing:
        delete call;  // ok == false: the client was gone; nothing else to do either way
        break;
    }
  }
}

void Frontend::FinishCall(Call* call, grpc::StatusCode code, const std::string& message) {
  call->state = Call::kFinishing;
  call->stream.Finish(grpc::Status(code, message), call);
}

// Appends the call's frame and registers the call; the frame cannot leave before the call is in
// `calls_` (the writer needs out_mu_), so its answer always finds it.
void Frontend::Forward(Call* call, int method) {
  const uint64_t call_id = next_call_id_.fetch_add(1, std::memory_order_relaxed);
  std::vector<grpc::Slice> slices;
  call->request.Dump(&slices);
  size_t length = 0;
  for (const grpc::Slice& s : slices) length += s.size();
  bool refused = false;
  {
    std::lock_guard<std::mutex> out(out_mu_);
    if (backend_gone_) {
      refused = true;
    } else {
      const size_t mark = pending_.size();
      pending_.reserve(mark + kCallHead + length);
      AppendCallHead(&pending_, length, call_id, method);
      for (const grpc::Slice& s : slices) pending_.append(reinterpret_cast<const char*>(s.begin()), s.size());
      slices.clear();
      call->request.Clear();  // copied: free it now rather than when the answer comes
      std::lock_guard<std::mutex> calls(calls_mu_);
      if (closing_) {
        pending_.resize(mark);
        refused = true;
      } else {
        calls_.emplace(call_id, call);
      }
    }
  }
  if (refused) {
    call->request.Clear();
    FinishCall(call, grpc::StatusCode::UNAVAILABLE, "server shutting down");
  }
  // Registered: `call` belongs to whoever answers it now; do not touch it here any more.
}

void Frontend::FlushIfIdle() {
  std::unique_lock<std::mutex> lock(out_mu_);
  if (writing_ || pending_.empty()) return;
  WriterLoop(&lock);
}

// Writes `pending_` until it stays empty; called with out_mu_ held and `writing_` false.
void Frontend::WriterLoop(std::unique_lock<std::mutex>* lock) {
  writing_ = true;
  while (!pending_.empty() && !backend_gone_) {
    writing_buf_.swap(pending_);
    lock->unlock();
    const bool ok = WriteAll(fd_, writing_buf_.data(), writing_buf_.size());
    writing_buf_.clear();
    if (writing_buf_.capacity() > kKeepCapacity) std::string().swap(writing_buf_);
    lock->lock();
    if (!ok) {
      backend_gone_ = true;
      pending_.clear();
      lock->unlock();
      RequestStop(true, 0);
      lock->lock();
    }
  }
  if (pending_.capacity() > kKeepCapacity && pending_.empty()) std::string().swap(pending_);
  writing_ = false;
}

void Frontend::ProtocolError(const char* what) {
  fprintf(stderr, "grpc_frontend: malformed answer from the backend (%s); exiting\n", what);
  _exit(1);
}

void Frontend::HandleAnswer(const char* frame, uint32_t length) {
  // frame: call_id | code | message length | message | response  (length bytes, >= 13)
  const uint64_t call_id = GetU64(frame);
  const unsigned code = static_cast<unsigned char>(frame[8]);
  const uint32_t message_len = GetU32(frame + 9);
  if (message_len > length - 13) ProtocolError("message longer than its frame");
  const char* message = frame + 13;
  const char* payload = message + message_len;
  const size_t payload_len = length - 13 - message_len;
  if (call_id == 0) {
    if (code == 0 && message_len == 8 && memcmp(message, "shutdown", 8) == 0) {
      std::string text(payload, payload_len);
      char* end = nullptr;
      double grace = strtod(text.c_str(), &end);
      if (end == text.c_str() || !(grace >= 0) || grace > 1e6) grace = 0;
      RequestStop(false, grace);
    } else {
      fprintf(stderr, "grpc_frontend: unknown control frame from the backend ignored\n");
    }
    return;
  }
  std::shared_lock<std::shared_mutex> guard(ops_mu_);
  Call* call = nullptr;
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    auto it = calls_.find(call_id);
    if (it == calls_.end()) return;  // cancelled or finished already
    call = it->second;
    calls_.erase(it);
  }
  Answer a{call, code, std::string(), grpc::ByteBuffer()};
  if (code == 0) {
    grpc::Slice slice(payload, payload_len);
    a.response = grpc::ByteBuffer(&slice, 1);
  } else {
    a.message.assign(message, message_len);
  }
  Inbox* inbox = inboxes_[call->cq].get();
  std::lock_guard<std::mutex> l(inbox->mu);
  inbox->items.push_back(std::move(a));
  if (!inbox->armed) {
    inbox->armed = true;
    inbox->alarm.Set(cqs_[call->cq].get(), gpr_time_0(GPR_CLOCK_MONOTONIC), inbox);
  }
}

void Frontend::DeliverInbox(int cq_index) {
  Inbox* inbox = inboxes_[cq_index].get();
  std::vector<Answer> items;
  {
    std::lock_guard<std::mutex> l(inbox->mu);
    items.swap(inbox->items);
    inbox->armed = false;
  }
  for (Answer& a : items) {
    Call* call = a.call;
    if (cqs_down_) {  // draining at exit: the call was cancelled; no new operations
      delete call;
      continue;
    }
    call->state = Call::kFinishing;
    if (a.code == 0) {
      call->stream.WriteAndFinish(a.response, grpc::WriteOptions(), grpc::Status::OK, call);
    } else {
      grpc::StatusCode status = a.code <= 16 ? static_cast<grpc::StatusCode>(a.code) : grpc::StatusCode::UNKNOWN;
      call->stream.Finish(grpc::Status(status, a.message), call);
    }
  }
}

void Frontend::ReaderLoop() {
  size_t capacity = kReadChunk;
  char* buf = static_cast<char*>(malloc(capacity));
  size_t start = 0, end = 0;
  while (buf != nullptr) {
    if (end == capacity) {  // room for at least a chunk, or the rest of a large frame
      if (start > 0) {
        memmove(buf, buf + start, end - start);
        end -= start;
        start = 0;
      }
      if (end == capacity) {
        char* grown = static_cast<char*>(realloc(buf, capacity * 2));
        if (grown == nullptr) ProtocolError("out of memory for a frame");
        buf = grown;
        capacity *= 2;
      }
    }
    ssize_t n = read(fd_, buf + end, capacity - end);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // Python went away
    end += static_cast<size_t>(n);
    while (end - start >= 4) {
      const uint32_t length = GetU32(buf + start);
      if (length < 13) ProtocolError("frame shorter than its header");
      // A response is at most a gRPC message (< 2 GiB) plus its header: anything longer is corrupt.
      if (length > (1u << 31) + 64) ProtocolError("frame longer than any answer");
      const size_t whole = 4 + static_cast<size_t>(length);
      if (end - start < whole) {
        if (whole > capacity - start) {  // make room for this frame now
          memmove(buf, buf + start, end - start);
          end -= start;
          start = 0;
          if (whole > capacity) {
            char* grown = static_cast<char*>(realloc(buf, whole));
            if (grown == nullptr) ProtocolError("out of memory for a frame");
            buf = grown;
            capacity = whole;
          }
        }
        break;
      }
      HandleAnswer(buf + start + 4, length);
      start += whole;
    }
    if (start == end) {
      start = end = 0;
      if (capacity > kKeepCapacity) {
        free(buf);
        capacity = kReadChunk;
        buf = static_cast<char*>(malloc(capacity));
      }
    }
  }
  free(buf);
  RequestStop(true, 0);
}

void Frontend::RequestStop(bool immediate, double grace_s) {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (immediate) {
    stop_immediate_ = true;
  } else if (!stop_requested_) {
    grace_s_ = grace_s;
  }
  stop_requested_ = true;
  stop_cv_.notify_all();
}

// Finishes every call still waiting for Python (nobody will answer them now) and makes the queue
// threads finish any that arrive from here on themselves.
void Frontend::DrainUnanswered(const char* why) {
  std::shared_lock<std::shared_mutex> guard(ops_mu_);
  std::unordered_map<uint64_t, Call*> left;
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    closing_ = true;
    left.swap(calls_);
  }
  for (auto& entry : left) {
    FinishCall(entry.second, grpc::StatusCode::UNAVAILABLE, why);
  }
}

int Frontend::Run() {
  ConnectBackend();

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o_.address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterAsyncGenericService(&service_);
  builder.SetMaxReceiveMessageSize(o_.max_message_bytes);
  builder.SetMaxSendMessageSize(o_.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, o_.reuseport);
  for (const auto& arg : o_.channel_args) {
    int value;
    if (ParseInt(arg.second, INT_MIN, INT_MAX, &value)) {
      builder.AddChannelArgument(arg.first, value);
    } else {
      builder.AddChannelArgument(arg.first, arg.second);
    }
  }
  for (int i = 0; i < o_.threads; ++i) {
    cqs_.push_back(builder.AddCompletionQueue());
    inboxes_.emplace_back(new Inbox);
  }
  server_ = builder.BuildAndStart();

  std::string hello;
  if (server_ == nullptr || port == 0) {
    std::string payload = "0 cannot listen on " + o_.address + " (address in use or not available)";
    AppendCallHead(&hello, payload.size(), 0, 0);
    hello += payload;
    WriteAll(fd_, hello.data(), hello.size());
    fprintf(stderr, "grpc_frontend: %s\n", payload.c_str() + 2);
    _exit(1);
  }

  {  // the hello goes first: no call is forwarded before the queue threads start
    std::string payload = std::to_string(port);
    std::unique_lock<std::mutex> lock(out_mu_);
    AppendCallHead(&pending_, payload.size(), 0, 0);
    pending_ += payload;
    WriterLoop(&lock);
  }
  for (int i = 0; i < o_.threads; ++i) {
    for (int k = 0; k < kRequestsPerCq; ++k) RequestOne(i);
  }
  std::vector<std::thread> cq_threads;
  for (int i = 0; i < o_.threads; ++i) cq_threads.emplace_back(&Frontend::CqLoop, this, i);
  std::thread(&Frontend::ReaderLoop, this).detach();

  // Wait for the shutdown frame, EOF or a signal.
  std::unique_lock<std::mutex> lock(stop_mu_);
  stop_cv_.wait(lock, [this] { return stop_requested_; });
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::microseconds(stop_immediate_ ? 0 : static_cast<int64_t>(grace_s_ * 1e6));
  accepting_.store(false);
  lock.unlock();

  std::thread shutdown([this, deadline] {
    server_->Shutdown(deadline);  // stops taking calls; at the deadline cancels what is left
    std::lock_guard<std::mutex> l(stop_mu_);
    shutdown_done_ = true;
    stop_cv_.notify_all();
  });

  // Calls waiting for Python do not end by themselves: finish them at the deadline (or at once
  // when Python went away or a signal came), so that Shutdown can return.
  bool drained = false;
  lock.lock();
  while (!shutdown_done_) {
    const bool late = std::chrono::system_clock::now() >= deadline;
    if (!drained && (stop_immediate_ || late)) {
      const bool cut_short = stop_immediate_ && !late;
      lock.unlock();
      if (cut_short) grpc_server_cancel_all_calls(server_->c_server());
      DrainUnanswered("server shutting down");
      drained = true;
      lock.lock();
      continue;
    }
    if (drained) {
      stop_cv_.wait(lock);
    } else {
      stop_cv_.wait_until(lock, deadline);
    }
  }
  lock.unlock();
  shutdown.join();
  DrainUnanswered("server shutting down");  // none should be left; harmless if so

  {
    std::unique_lock<std::shared_mutex> guard(ops_mu_);
    cqs_down_ = true;
    for (auto& cq : cqs_) cq->Shutdown();
  }
  for (auto& t : cq_threads) t.join();
  server_.reset();
  inboxes_.clear();
  cqs_.clear();
  return 0;
}

void SignalLoop(sigset_t set, Frontend* frontend) {
  while (true) {
    int sig = 0;
    if (sigwait(&set, &sig) == 0) frontend->RequestStop(true, 0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // No PR_SET_PDEATHSIG: it fires when the thread that started us ends, not the process. When the
  // Python process ends, the kernel closes its end of the socket, and EOF ends us (ReaderLoop).
  // Signals go to the signal thread only: block them before any other thread exists.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Debian builds Abseil with its mutex deadlock detection on: every absl::Mutex lock inside gRPC
  // would pay for the lock graph (several % of the CPU per call). It only ever aborts a buggy program.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Options options = ParseFlags(argc, argv);
  Frontend* frontend = new Frontend(std::move(options));  // lives until _exit
  std::thread(SignalLoop, set, frontend).detach();
  const int code = frontend->Run();
  fflush(stderr);
  _exit(code);  // the reader and signal threads are still blocked in their calls
}
