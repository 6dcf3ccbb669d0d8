// The Swift entry points behind the exported malloc family (implemented with @_cdecl in the
// HeapPatrolPreload module). `api` is an AllocationAPI raw value. `frame` is the exported function's
// own frame (__builtin_frame_address(0)): the stack is walked from there, so it starts exactly at
// the program's call site however the Swift side was inlined. `thread` is the caller's kernel thread
// id (cached per thread on the C side, which also gives each thread its alternate signal stack).
#ifndef HEAPPATROL_EXPORTS_H
#define HEAPPATROL_EXPORTS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *heappatrol_allocate(size_t size, size_t alignment, unsigned char api, void *frame, int thread);
void *heappatrol_calloc(size_t count, size_t size, void *frame, int thread);
void heappatrol_free(void *pointer, unsigned char api, void *frame, int thread);
void *heappatrol_realloc(void *pointer, size_t size, void *frame, int thread);
void *heappatrol_reallocarray(void *pointer, size_t count, size_t size, void *frame,
                             int thread);
size_t heappatrol_usable_size(void *pointer);
/// Starts the runtime (the library constructor calls it).
void heappatrol_start(void);
/// operator new that cannot return NULL: reports out-of-memory and aborts.
void heappatrol_new_failed(size_t size, unsigned char api, void *frame, int thread);
/// Reports an alignment the API refuses (posix_memalign(24), aligned_alloc(3), ...): a bad-alignment
/// finding at the call; the caller then fails as glibc would (EINVAL).
void heappatrol_bad_alignment(size_t alignment, size_t size, void *frame, int thread);

#ifdef __cplusplus
}
#endif
#endif
