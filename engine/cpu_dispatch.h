// Function multi-versioning for hot loops: one clone per vector width, chosen at load
// time by the CPU. ThreadSanitizer cannot run ifunc resolvers (they run before its
// runtime starts), so sanitizer builds get the plain function.
#ifndef RECSERVE_ENGINE_CPU_DISPATCH_H_
#define RECSERVE_ENGINE_CPU_DISPATCH_H_

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define RECSERVE_VECTOR_CLONES
#else
#define RECSERVE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

#endif  // RECSERVE_ENGINE_CPU_DISPATCH_H_
