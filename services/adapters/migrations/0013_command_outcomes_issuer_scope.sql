-- The issuer of a command reads its outcome only with a token that may see the order's
-- restaurant: one person (sub) with a token per restaurant must not read, through one token, the
-- outcomes of commands sent for another restaurant with the other (issue 10, scenario 6).
-- Outcomes that name no restaurant (refused before an order was found) stay readable by their
-- issuer alone, as in 0002.
DROP POLICY command_outcomes_caller ON command_outcomes;
CREATE POLICY command_outcomes_caller ON command_outcomes FOR SELECT TO authenticated, service_role
    USING (
        (actor_sub = public.jwt_subject() AND actor_role = current_user::text
            AND (restaurant_id IS NULL OR public.jwt_allows_restaurant(restaurant_id)))
        OR (restaurant_id IS NOT NULL AND public.caller_may_act_for(restaurant_id))
    );
