// hp-fixture-cxx: C++ allocation/deallocation mismatches (one subcommand per bug) and a correct C++
// program ("good") that must run clean. Markers "hp:alloc CASE" / "hp:bug CASE" label the lines the
// integration tests look for in the symbolized stacks.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#define NOINLINE __attribute__((noinline))

namespace {

// Hides where a pointer came from, so the compiler neither warns about nor removes the mismatch.
template <typename T> T *launder(T *pointer) {
  T *volatile hidden = pointer;
  return hidden;
}

struct Widget {
  int values[6];
};

NOINLINE int malloc_then_delete() {
  auto *block = static_cast<Widget *>(std::malloc(sizeof(Widget)));  // hp:alloc malloc-delete
  delete launder(block);  // hp:bug malloc-delete
  return 0;
}

NOINLINE int new_array_then_delete() {
  int *array = new int[8];  // hp:alloc new-array-delete
  delete launder(array);  // hp:bug new-array-delete
  return 0;
}

NOINLINE int new_then_free() {
  Widget *widget = new Widget();  // hp:alloc new-free
  std::free(launder(widget));  // hp:bug new-free
  return 0;
}

NOINLINE int new_then_delete_array() {
  Widget *widget = new Widget();  // hp:alloc new-delete-array
  delete[] launder(widget);  // hp:bug new-delete-array
  return 0;
}

struct alignas(64) CacheLine {
  char bytes[64];
};

NOINLINE int good() {
  std::vector<std::string> words;
  for (int i = 0; i < 20000; i++) words.push_back("word-" + std::to_string(i));
  std::map<std::string, size_t> lengths;
  for (const auto &word : words) lengths[word] = word.size();
  if (lengths.size() != 20000) return 1;
  auto shared = std::make_shared<std::vector<int>>(1000, 7);
  auto unique = std::make_unique<int[]>(100);
  unique[99] = (*shared)[999];
  auto *aligned = new CacheLine[4];  // aligned operator new[]
  if (reinterpret_cast<uintptr_t>(aligned) % 64 != 0) return 2;
  delete[] aligned;
  auto *nothrow = new (std::nothrow) Widget();
  delete nothrow;
  std::string text;
  for (int i = 0; i < 1000; i++) text += "x";
  std::printf("good: %zu words, %zu chars\n", words.size(), text.size());
  return unique[99] == 7 ? 0 : 3;
}

struct Case {
  const char *name;
  int (*run)();
};

const Case cases[] = {
    {"malloc-delete", malloc_then_delete},
    {"new-array-delete", new_array_then_delete},
    {"new-free", new_then_free},
    {"new-delete-array", new_then_delete_array},
    {"good", good},
};

}  // namespace

int main(int argc, char **argv) {
  if (argc == 2)
    for (const auto &fixture : cases)
      if (std::strcmp(argv[1], fixture.name) == 0) return fixture.run();
  std::fprintf(stderr, "usage: %s CASE\ncases:", argv[0]);
  for (const auto &fixture : cases) std::fprintf(stderr, " %s", fixture.name);
  std::fprintf(stderr, "\n");
  return 2;
}
