from geopera.v1 import catalog_pb2


def test_items_list_returns_the_samples(world):
    result = world.client("alpha").execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha"))
    assert sorted(i.name for i in result.items) == sorted(world.items)
