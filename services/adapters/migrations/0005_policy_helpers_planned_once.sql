-- The policy helpers of 0002, same rule, cheaper: 0002's jwt_allows_restaurant() (a SELECT with a
-- FROM) and is_staff_of() (a SQL function with a subquery) could not be inlined, so PostgreSQL
-- planned their bodies again for every statement a caller ran (about 1 ms per command in the
-- worker). Now jwt_allows_restaurant() is a single expression the planner inlines into the
-- policies, and is_staff_of() is PL/pgSQL, whose membership lookup is planned once per session.

-- The token's own scope: absent, null or [] narrows nothing; a list must name the restaurant;
-- anything else allows nothing.
CREATE OR REPLACE FUNCTION public.jwt_allows_restaurant(restaurant uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT public.jwt_subject() IS NOT NULL
       AND CASE jsonb_typeof(auth.jwt() -> 'restaurant_ids')
               WHEN 'array' THEN auth.jwt() -> 'restaurant_ids' = '[]'::jsonb
                              OR (auth.jwt() -> 'restaurant_ids') ? restaurant::text
               WHEN 'null' THEN true
               ELSE auth.jwt() -> 'restaurant_ids' IS NULL
           END
$$;

CREATE OR REPLACE FUNCTION public.is_staff_of(restaurant uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM public.restaurant_staff AS staff
        WHERE staff.restaurant_id = restaurant AND staff.user_id = public.jwt_subject()
    );
END
$$;
