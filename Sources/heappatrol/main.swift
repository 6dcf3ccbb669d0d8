print("heappatrol: not built yet")
